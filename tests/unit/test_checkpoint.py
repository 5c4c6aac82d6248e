"""Checkpoint format: round trip, commit protocol, corruption, pruning, on local disk and on S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from seller_dist import storage
from seller_dist.train import checkpoint as ck
from seller_dist.train.export import committed_checkpoint_url


def write_checkpoint(
    root: str, step: int, world: int = 2, commit: bool = True, seed: int = 0, **train_state: float | None
) -> dict[int, dict[str, torch.Tensor]]:
    """Every rank writes its own part (dense state only on rank 0, one expert file per rank);
    `train_state` adds keys to rank 0's train_state.json (valid_loss=...)."""
    g = torch.Generator().manual_seed(seed + step)
    parts = {}
    for rank in range(world):
        w = ck.CheckpointWriter(root, step, rank, world)
        experts = {
            "w1": torch.randn(2, 3, 4, generator=g),
            "router.proj.weight": torch.randn(4, 3, generator=g),
        }
        if rank == 0:
            w.save_tensors(ck.DENSE_FILE, {"slots": torch.randn(4, 8, generator=g)})
            w.save_json(ck.TRAIN_STATE_FILE, {"step": step, "epoch": 0, **train_state})
            w.save_text(ck.CONFIG_FILE, "run_name: t\n")
        w.save_tensors(ck.moe_file(rank), experts)
        w.save_json(ck.data_state_file(rank), {"epoch": 1, "batches_done": 3 + rank})
        w.upload()
        assert not w.staging_dir.exists()
        parts[rank] = experts
    if commit:
        ck.commit(storage.join(root, ck.step_dirname(step)), world)
    return parts


def test_round_trip_every_rank_part(tmp_path):
    root = str(tmp_path / "run" / "checkpoints")
    parts = write_checkpoint(root, 40)
    c = ck.latest_committed(root)
    assert c is not None and c.step == 40 and c.world_size == 2
    assert c.url == f"{root}/step-00000040"
    for rank, experts in parts.items():
        loaded = c.load_tensors(ck.moe_file(rank))
        assert loaded.keys() == experts.keys()
        assert all(torch.equal(loaded[k], experts[k]) for k in experts)
        assert c.load_json(ck.data_state_file(rank)) == {"epoch": 1, "batches_done": 3 + rank}
    assert c.load_json(ck.TRAIN_STATE_FILE)["step"] == 40
    marker = json.loads(Path(root, "step-00000040", ck.COMMIT_MARKER).read_text())
    on_disk = sorted(
        p.relative_to(Path(root, "step-00000040")).as_posix()
        for p in Path(root, "step-00000040").rglob("*")
        if p.is_file() and p.name != ck.COMMIT_MARKER
    )
    assert sorted(marker["files"]) == on_disk  # every file is covered by a hash
    assert marker["files"]["model.safetensors"] == ck.sha256_file(
        Path(root, "step-00000040", "model.safetensors")
    )


def test_checkpoint_cut_off_mid_write_is_ignored_by_resume(tmp_path):
    root = str(tmp_path / "ckpts")
    write_checkpoint(root, 20)
    # step 30: rank 0 uploaded, rank 1 died before its upload; nobody committed
    w = ck.CheckpointWriter(root, 30, 0, 2)
    w.save_tensors(ck.DENSE_FILE, {"slots": torch.zeros(2)})
    w.upload()
    with pytest.raises(ck.CheckpointError, match=r"rank 1 of 2 has not uploaded its part"):
        ck.commit(f"{root}/step-00000030", 2)
    # step 50: every file written, process killed before the marker
    write_checkpoint(root, 50, commit=False)
    assert [(e.step, e.committed) for e in ck.list_checkpoints(root)] == [
        (20, True),
        (30, False),
        (50, False),
    ]
    assert ck.latest_committed(root).step == 20
    with pytest.raises(ck.CheckpointError, match=r"step-00000050 has no COMMITTED marker"):
        ck.Checkpoint.open(f"{root}/step-00000050")


def test_a_runs_folder_resolves_to_its_newest_committed_step_not_a_cut_off_newer_one(tmp_path):
    root = str(tmp_path / "ckpts")
    assert committed_checkpoint_url(f"{root}/step-00000020/") == f"{root}/step-00000020"  # taken as is
    with pytest.raises(ck.CheckpointError) as e:
        committed_checkpoint_url(root)
    assert str(e.value) == f"no committed checkpoint under {root}"
    write_checkpoint(root, 20)
    write_checkpoint(root, 40)
    write_checkpoint(root, 50, commit=False)  # every file written, killed before the marker
    assert committed_checkpoint_url(root + "/") == f"{root}/step-00000040"


def test_corrupt_checkpoint_is_an_error_naming_it(tmp_path):
    root = str(tmp_path / "ckpts")
    write_checkpoint(root, 20)
    write_checkpoint(root, 40)
    f = Path(root, "step-00000040", "model.safetensors")
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointCorruptError) as e:
        ck.latest_committed(root)
    assert (
        str(e.value) == f"checkpoint {root}/step-00000040 is corrupt: file model.safetensors sha256 mismatch"
    )
    # without upfront verification, the read itself is checked
    c = ck.latest_committed(root, verify=False)
    with pytest.raises(ck.CheckpointCorruptError, match="file model.safetensors sha256 mismatch"):
        c.load_tensors(ck.DENSE_FILE)
    Path(root, "step-00000040", ck.data_state_file(1)).unlink()
    with pytest.raises(ck.CheckpointCorruptError, match=r"file data-rank-1.json is missing"):
        c.load_json(ck.data_state_file(1))
    Path(root, "step-00000040", ck.COMMIT_MARKER).write_text("{not json")
    with pytest.raises(ck.CheckpointCorruptError, match=r"step-00000040 is corrupt: unreadable COMMITTED"):
        ck.latest_committed(root)


def test_prune_keeps_newest_and_drops_stale_partials(tmp_path):
    root = str(tmp_path / "ckpts")
    for step in (10, 20, 30):
        write_checkpoint(root, step)
    write_checkpoint(root, 25, commit=False)  # dead partial write, older than the newest commit
    write_checkpoint(root, 40, commit=False)  # may still be in progress: kept
    removed = ck.prune(root, keep=2)
    assert [u.rsplit("/", 1)[-1] for u in removed] == ["step-00000010", "step-00000025"]
    assert [(e.step, e.committed) for e in ck.list_checkpoints(root)] == [(20, True), (30, True), (40, False)]
    assert not Path(root, "step-00000010").exists()


def test_prune_keep_best_keeps_the_lowest_validation_loss_wherever_it_is(tmp_path):
    """Hand-made losses: the best checkpoint survives pruning when it is older than the newest
    `keep`, and nothing extra is kept when it is among them; NaN / missing losses and uncommitted
    folders never count as the best, and a tie keeps the earliest."""

    def steps(root: str) -> list[int]:
        return [e.step for e in ck.list_checkpoints(root)]

    def removed_steps(removed: list[str]) -> list[int]:
        return [int(u.rsplit("-", 1)[-1]) for u in removed]

    # best (0.5 at step 20) is neither the newest nor among the newest 2: kept besides them
    root = str(tmp_path / "older")
    for step, loss in ((10, 0.9), (20, 0.5), (30, 0.7), (40, 0.8), (50, 0.6)):
        write_checkpoint(root, step, world=1, valid_loss=loss)
    write_checkpoint(root, 15, world=1, commit=False, valid_loss=0.1)  # a dead partial: never the best
    assert ck.best_checkpoint(root).step == 20
    assert removed_steps(ck.prune(root, keep=2, keep_best="valid_loss")) == [10, 15, 30]
    assert steps(root) == [20, 40, 50]
    # the same checkpoints without keep_best: only the newest 2
    assert removed_steps(ck.prune(root, keep=2)) == [20]
    assert steps(root) == [40, 50]

    # best among the newest `keep`: nothing else survives
    root = str(tmp_path / "newest")
    for step, loss in ((10, 0.9), (20, 0.8), (30, 0.4)):
        write_checkpoint(root, step, world=1, valid_loss=loss)
    assert removed_steps(ck.prune(root, keep=1, keep_best="valid_loss")) == [10, 20]
    assert steps(root) == [30]

    # NaN and missing losses are skipped; of two equal lowest losses the earlier one is kept
    root = str(tmp_path / "ties")
    for step, loss in ((10, float("nan")), (20, 0.3), (30, None), (40, 0.3), (50, 0.9), (60, 0.35)):
        write_checkpoint(root, step, world=1, valid_loss=loss)
    assert removed_steps(ck.prune(root, keep=1, keep_best="valid_loss")) == [10, 30, 40, 50]
    assert steps(root) == [20, 60]

    # no checkpoint records a loss: plain keep-newest
    root = str(tmp_path / "none")
    for step in (10, 20, 30):
        write_checkpoint(root, step, world=1)
    assert ck.best_checkpoint(root) is None
    assert removed_steps(ck.prune(root, keep=1, keep_best="valid_loss")) == [10, 20]


def test_nested_state_round_trip_and_no_pickle_fallback(tmp_path):
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(3)}, 7: {}},
        "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.95), "params": [0, 7], "name": None, "amsgrad": False}
        ],
        "dtype": torch.bfloat16,
    }
    w = ck.CheckpointWriter(str(tmp_path / "c"), 1)
    w.save_state("optim", state)
    w.upload()
    ck.commit(f"{tmp_path}/c/step-00000001", 1)
    back = ck.Checkpoint.open(f"{tmp_path}/c/step-00000001").load_state("optim")
    assert back["param_groups"] == state["param_groups"]  # tuples stay tuples, int keys stay ints
    assert set(back["state"]) == {0, 7} and back["dtype"] is torch.bfloat16
    assert torch.equal(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    with pytest.raises(TypeError, match=r"state value state.param_groups\[0\].fn is a function"):
        ck.flatten_state({"param_groups": [{"fn": lambda: 0}]})
    w2 = ck.CheckpointWriter(str(tmp_path / "c"), 2)
    with pytest.raises(ck.CheckpointError, match="refusing to write frozen LLM weights"):
        w2.save_tensors(ck.DENSE_FILE, {"llm.model.embed_tokens.weight": torch.zeros(2)})
    w2.cleanup()


def test_optimizer_state_resume_is_bit_identical(tmp_path):
    """Train 3 steps, checkpoint, train 3 more; a model restored from the checkpoint matches exactly."""

    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 1))
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)

    data = [torch.randn(5, 6, generator=torch.Generator().manual_seed(i)) for i in range(6)]

    def step(m: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()

    m, opt = make()
    for x in data[:3]:
        step(m, opt, x)
    w = ck.CheckpointWriter(str(tmp_path / "c"), 3)
    w.save_tensors(ck.DENSE_FILE, m.state_dict())
    w.save_state("optim-rank-0", opt.state_dict())
    w.upload()
    ck.commit(f"{tmp_path}/c/step-00000003", 1)
    for x in data[3:]:
        step(m, opt, x)

    m2, opt2 = make()
    c = ck.latest_committed(str(tmp_path / "c"))
    m2.load_state_dict(c.load_tensors(ck.DENSE_FILE))
    opt2.load_state_dict(c.load_state("optim-rank-0"))
    for x in data[3:]:
        step(m2, opt2, x)
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_opaque_subfolder_is_committed_and_downloaded(tmp_path):
    """A tool writing its own folder (DeepSpeed's save_checkpoint) is covered by the same protocol."""
    root = str(tmp_path / "c")
    w = ck.CheckpointWriter(root, 5, 0, 1)
    engine = w.staging_dir / "engine" / "global_step5"
    engine.mkdir(parents=True)
    (engine / "mp_rank_00_model_states.pt").write_bytes(b"\x00opaque\x01" * 10)
    (w.staging_dir / "engine" / "latest").write_text("global_step5")
    w.upload()
    ck.commit(f"{root}/step-00000005", 1)
    c = ck.latest_committed(root)
    assert c.names("engine/") == ["engine/global_step5/mp_rank_00_model_states.pt", "engine/latest"]
    out = c.download(tmp_path / "restore", prefix="engine/")
    assert (out / "engine/latest").read_text() == "global_step5"
    assert (out / "engine/global_step5/mp_rank_00_model_states.pt").read_bytes() == b"\x00opaque\x01" * 10


def test_commit_refuses_conflicting_files_and_leftovers(tmp_path):
    root = str(tmp_path / "c")
    for rank in range(2):
        w = ck.CheckpointWriter(root, 1, rank, 2)
        w.save_tensors(ck.DENSE_FILE, {"x": torch.full((2,), float(rank))})
        w.upload()
    with pytest.raises(ck.CheckpointError, match=r"ranks 0 and 1 both wrote model.safetensors"):
        ck.commit(f"{root}/step-00000001", 2)
    # an earlier 2-rank attempt left its rank-0 record under a step a 1-rank job now writes
    w = ck.CheckpointWriter(root, 2, 0, 1)
    w.upload()
    storage.write_json(
        f"{root}/step-00000002/{ck.rank_done_file(0)}", {"rank": 0, "world_size": 2, "step": 2, "files": {}}
    )
    with pytest.raises(ck.CheckpointError, match=r"world_size 2, not 1 \(a leftover of an earlier attempt\)"):
        ck.commit(f"{root}/step-00000002", 1)


@pytest.mark.slow
def test_s3_round_trip_cut_off_corrupt_and_prune(s3_bucket):
    root = f"{s3_bucket}/runs/r1/checkpoints"
    parts = write_checkpoint(root, 10, world=1)
    write_checkpoint(root, 20)
    write_checkpoint(root, 30, world=1, commit=False)
    assert [(e.step, e.committed) for e in ck.list_checkpoints(root)] == [(10, True), (20, True), (30, False)]
    c = ck.latest_committed(root)
    assert c.step == 20 and c.url == f"{root}/step-00000020"
    assert c.load_json(ck.data_state_file(1)) == {"epoch": 1, "batches_done": 4}
    old = ck.Checkpoint.open(f"{root}/step-00000010", verify=False)
    assert torch.equal(old.load_tensors(ck.moe_file(0))["w1"], parts[0]["w1"])
    storage.write_bytes(f"{root}/step-00000020/{ck.moe_file(0)}", b"garbage")
    with pytest.raises(ck.CheckpointCorruptError) as e:
        ck.latest_committed(root)
    assert (
        str(e.value)
        == f"checkpoint {root}/step-00000020 is corrupt: file moe-rank-0.safetensors sha256 mismatch"
    )
    assert [u.rsplit("/", 1)[-1] for u in ck.prune(root, keep=1)] == ["step-00000010"]
    assert [(e.step, e.committed) for e in ck.list_checkpoints(root)] == [(20, True), (30, False)]
    assert storage.listdir(f"{root}/step-00000010") == []
