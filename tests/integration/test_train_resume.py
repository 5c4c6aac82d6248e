"""The training worker on 2 in-process gloo ranks (no Ray): resume continues exactly, and a NaN on
one rank stops both with a message naming the step and the rank.

Resume: run A trains 6 steps (checkpoints at 3 and 6). Its step-6 checkpoint then loses its
COMMITTED marker (a writer cut off mid-write), so a fresh start B must ignore it, resume from the
committed step 3 (weights, both optimizers, LR position, data cursor) and train steps 4-6. Steps 4-6
must give the same losses and B's recommitted step 6 the same weights as A's (every trainable
weight: the dense ones and every expert-parallel rank's experts), bit for bit: what a user resumes
or exports from. On CPU with gloo every reduction runs in a fixed order and dropout/routing are seeded
per (seed, step, rank), so any difference would be a resume bug, not noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seller_dist.train import checkpoint as ck
from seller_dist.train import export as ex
from tests.fault_callbacks import NanInputs, RecordCalls, entry, override
from tests.train_helpers import small_overrides, spawn_workers

pytestmark = pytest.mark.slow


def checkpoint_weights(c: ck.Checkpoint) -> dict[str, dict[str, torch.Tensor]]:
    """The trainable weights of a checkpoint by file, as export and warm starts read them: the dense
    trainables and each expert-parallel rank's experts + router (model_meta.json gives ep_size)."""
    ep_size = c.load_json(ck.MODEL_META_FILE)["model"]["ep_size"]
    return {n: c.load_tensors(n) for n in [ck.DENSE_FILE, *(ck.moe_file(e) for e in range(ep_size))]}


@pytest.mark.parametrize(
    "layout",
    [
        [],
        # the frozen LLM whole on each rank outside the engine, batches cut from length-sorted groups
        ["llm_layout=replicated", "data.length_buckets=2"],
    ],
    ids=["zero3", "replicated+length_buckets"],
)
def test_resume_from_committed_checkpoint_continues_exactly(small_data, tiny_llm_dir, tmp_path, layout):
    runs = tmp_path / "runs"
    overrides = small_overrides(small_data, tiny_llm_dir, str(runs)) + layout
    a = spawn_workers(overrides, tmp_path / "a")
    assert all(isinstance(r, dict) for r in a), a
    root = ck.checkpoints_root(str(runs), "test-run")
    assert [(e.step, e.committed) for e in ck.list_checkpoints(root)] == [(3, True), (6, True)]
    assert a[0]["losses"] == a[1]["losses"] and sorted(a[0]["losses"]) == [1, 2, 3, 4, 5, 6]
    # A's step 6 as committed, kept aside; it holds every trainable weight of the model it describes
    a_step6 = str(shutil.copytree(Path(root, "step-00000006"), tmp_path / "a-step-00000006"))
    seller = ex.build_seller(ex.from_checkpoint(a_step6))  # loading is strict: a missing weight raises
    trainable = {n for n, _ in seller.model.trainable_named_parameters()}
    trainable |= {f"{ex.MOE_PREFIX}{k}" for k in seller.moe.state_dict()}
    assert set(ex.from_checkpoint(a_step6).weights) == trainable
    a_weights = checkpoint_weights(ck.Checkpoint.open(a_step6))
    assert a_weights.keys() == {ck.DENSE_FILE, ck.moe_file(0), ck.moe_file(1)}  # ep_size 2

    # cut off the step-6 commit: resume must skip that folder and start from step 3
    Path(root, "step-00000006", ck.COMMIT_MARKER).unlink()
    shutil.rmtree(Path(root, "step-00000006", "engine"))
    b = spawn_workers(overrides, tmp_path / "b")
    assert all(isinstance(r, dict) for r in b), b
    for ra, rb in zip(a, b, strict=True):
        assert rb["start_step"] == 3 and rb["step"] == 6
        assert rb["losses"] == {s: ra["losses"][s] for s in (4, 5, 6)}
    # B committed step 6 again; it holds the same weights as A's, file by file, bit for bit
    latest = ck.latest_committed(root)
    assert latest is not None and latest.step == 6
    b_weights = checkpoint_weights(latest)
    assert b_weights.keys() == a_weights.keys()
    for file, tensors in a_weights.items():
        assert b_weights[file].keys() == tensors.keys(), file
        for name, value in tensors.items():
            assert torch.equal(b_weights[file][name], value), f"{file}: {name}"
        assert not any(k.startswith("llm.") for k in b_weights[file]), file


def test_nan_on_one_rank_stops_every_rank_before_any_weight_moves(small_data, tiny_llm_dir, tmp_path):
    """NaN inputs on rank 1 at step 2: both ranks raise the same error at the step's one exchange,
    after backward and before the optimizer step, so the weights are still those of step 1.

    The NaN comes from a config callback (tests/fault_callbacks.py) between two recorders, one from
    the config and one given to the Trainer: each rank calls the config's callbacks in order, then
    the Trainer's, with its own rank and the 1-based step."""
    runs, calls = tmp_path / "runs", tmp_path / "calls"
    calls.mkdir()
    callbacks = override(
        entry(RecordCalls, out_dir=str(calls), tag="first"),
        entry(NanInputs, rank=1, step=2),
    )
    overrides = small_overrides(small_data, tiny_llm_dir, str(runs)) + [
        "max_steps=2",
        "checkpoint.every_steps=1",
        callbacks,
    ]
    last = RecordCalls(str(calls), tag="last")
    errs = spawn_workers(overrides, tmp_path / "nan", callbacks=[last])
    assert len(errs) == 2 and all(isinstance(e, str) for e in errs), errs
    for e in errs:
        assert e.startswith("NonFiniteError: non-finite loss at step 2 on rank 1: nan"), e[:300]
    # every hook call of each rank, in order: (tag, hook, step, NaN in the inputs it saw)
    for rank in (0, 1):
        lines = (calls / f"calls-rank{rank}.jsonl").read_text().splitlines()
        got = [json.loads(x) for x in lines]
        assert {c["rank"] for c in got} == {rank}
        starts = [(c["tag"], c["hook"]) for c in got[:2]]
        assert starts == [("first", "on_rank_start"), ("last", "on_rank_start")], got
        nan_here = rank == 1
        assert [(c["tag"], c["step"], c["nan"]) for c in got[2:]] == [
            ("first", 1, False), ("last", 1, False), ("first", 2, False), ("last", 2, nan_here),
        ], got  # fmt: skip
    # the step-1 checkpoint is the last one, and every rank's weights still equal it
    root = ck.checkpoints_root(str(runs), "test-run")
    assert [e.step for e in ck.list_checkpoints(root)] == [1]
    step1 = ck.Checkpoint.open(ck.list_checkpoints(root)[0].url)
    saved = dict(step1.load_tensors(ck.DENSE_FILE))
    # the experts of each expert-parallel rank, stacked in rank order; the router is replicated
    parts = [step1.load_tensors(ck.moe_file(e)) for e in range(len(step1.names("moe-rank-")))]
    for k, v in parts[0].items():
        full = torch.cat([p[k] for p in parts]) if k in ("w1", "b1", "w2", "b2") else v
        saved[f"moe.{k}"] = full
    for rank in (0, 1):
        now = torch.load(tmp_path / "nan" / f"rank{rank}.stopped.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in now.values())
        assert now.keys() == saved.keys()
        for k, v in now.items():
            assert torch.equal(v, saved[k]), k
