"""The checkpoint registry: docs/checkpoints.md's table is the registry's, every part round-trips
through a real checkpoint, and each part is written only by the ranks its entry names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from seller_dist.train import checkpoint as ck
from seller_dist.train.checkpoint_state import PARTS, CheckpointState, Fixed, TrainProgress, markdown_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkpoints.md"


def test_docs_table_is_the_registry():
    block = re.search(r"<!-- table: checkpoint-parts -->\n(.*?)\n\n", DOC.read_text(), re.S)
    assert block is not None, "docs/checkpoints.md lost its generated parts table"
    assert block.group(1) == markdown_table(), "regenerate: ./launch.sh tables"


class Tensors:
    def __init__(self, value: float):
        self.t = {"w": torch.full((2, 3), value)}

    def state_dict(self):
        return dict(self.t)

    def load_state_dict(self, state):
        self.t = dict(state)


class Cursor:
    def __init__(self, batches: int):
        self.batches = batches

    def state_dict(self):
        return {"epoch": 0, "batches_done": self.batches}

    def load_state_dict(self, state):
        self.batches = state["batches_done"]


class Engine:
    def __init__(self):
        self.loaded: str | None = None

    def save_into(self, folder: str, tag: str) -> None:
        Path(folder, tag).mkdir()
        Path(folder, tag, "part.bin").write_bytes(b"engine-bytes")

    def load_from(self, folder: str, tag: str, url: str) -> None:
        self.loaded = Path(folder, tag, "part.bin").read_bytes().decode()


def registry(rank: int, holder: bool, value: float, step: int, seed: int = 7) -> tuple[CheckpointState, dict]:
    objs = {
        "engine": Engine(),
        "experts": Tensors(value),
        "expert_optimizer": torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]),
        "data": Cursor(step * 3 + rank),
        "progress": TrainProgress(step=step, lr=0.5, seed=seed, world_size=2, manifest_sha256="ab",
                                  valid_loss=1.25, valid_step=step),
        "config": Fixed("run_name: x\n"),
        "model_meta": Fixed({"model": {}}),
    }  # fmt: skip
    reg = CheckpointState(rank, ep_rank=rank, expert_holder=holder)
    for name, obj in objs.items():
        reg.register(name, obj)
    return reg, objs


def test_parts_round_trip_and_are_written_by_their_ranks(tmp_path):
    root = str(tmp_path / "ckpts")
    regs = [registry(r, holder=True, value=float(r + 1), step=4) for r in (0, 1)]
    for r, (reg, _) in enumerate(regs):
        w = ck.CheckpointWriter(root, 4, r, 2)
        reg.save(w)
        w.upload()
        w.cleanup()
    ck.commit(f"{root}/{ck.step_dirname(4)}", 2)
    c = ck.Checkpoint.open(f"{root}/{ck.step_dirname(4)}")
    # rank 0 alone writes train_state.json and config.yaml; every rank its cursor and optimizer
    assert c.has(ck.TRAIN_STATE_FILE) and c.has(ck.CONFIG_FILE) and c.has(ck.MODEL_META_FILE)
    assert {ck.data_state_file(0), ck.data_state_file(1), "moe-rank-0.safetensors", "moe-rank-1.safetensors",
            "moe-optim-rank-0.json", "moe-optim-rank-1.json"} <= set(c.names())  # fmt: skip
    assert c.load_json(ck.TRAIN_STATE_FILE) == {
        "step": 4, "lr": 0.5, "seed": 7, "world_size": 2, "manifest_sha256": "ab",
        "valid_loss": 1.25, "valid_step": 4,
    }  # fmt: skip

    for r in (0, 1):  # fresh objects restored from the checkpoint equal the saved ones
        reg, objs = registry(r, holder=True, value=99.0, step=0)
        reg.load(c)
        assert objs["progress"].step == 4 and objs["progress"].valid_loss == 1.25
        assert objs["data"].batches == 4 * 3 + r
        assert torch.equal(objs["experts"].t["w"], torch.full((2, 3), float(r + 1)))
        assert objs["engine"].loaded == "engine-bytes"

    reg, _ = registry(0, holder=True, value=0.0, step=0, seed=8)
    with pytest.raises(ck.CheckpointError, match="written with seed=7, this run has seed=8"):
        reg.load(c)


def test_non_holders_write_no_experts_and_unknown_parts_are_refused(tmp_path):
    reg, _ = registry(1, holder=False, value=1.0, step=2)
    w = ck.CheckpointWriter(str(tmp_path), 2, 1, 2)
    reg.save(w)
    assert not any(n.startswith("moe-rank-") for n in w.staged_files())
    assert ck.data_state_file(1) in w.staged_files() and ck.TRAIN_STATE_FILE not in w.staged_files()
    w.cleanup()
    with pytest.raises(KeyError, match="no checkpoint part named 'rng'"):
        reg.register("rng", Fixed(0))
    assert set(PARTS) >= {"engine", "experts", "expert_optimizer", "data", "progress"}
