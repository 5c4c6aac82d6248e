"""Validation during training (seller_dist.train.validation) on real gloo ranks, no Ray.

- The validation loss of the same weights is the same with 1 and 2 workers: lr=1e-30 leaves the
  initial weights as they are (each update is below float32 resolution), so any difference between
  the two runs would come from how the split was divided; the split does not divide evenly, so one
  rank really runs a padded round (the ranks report their plans).
- The checkpoint records its own validation loss, and `checkpoint.keep_best` keeps the committed
  checkpoint with the lowest one besides the newest `keep`, in a run whose best is an old one.
"""

from __future__ import annotations

import math

import pytest

from seller_dist.train import checkpoint as ck
from tests.train_helpers import small_overrides, spawn_workers

pytestmark = pytest.mark.slow


def test_validation_loss_is_the_same_with_one_and_two_workers(small_data, tiny_llm_dir, tmp_path):
    # the 60 valid examples in batches of 7: 9 batches (the last of 4), so with 2 workers rank 0
    # takes 5 batches (32 examples) and rank 1 takes 4 (28) plus a padded round that counts nothing
    common = [
        "max_steps=2",
        "model.ep_size=1",
        "optim.lr=1e-30",
        "eval.every_steps=1",
        "eval.max_examples=0",
        "eval.batch_size=7",
    ]
    plans = {1: [(9, 0, 60)], 2: [(5, 0, 32), (5, 1, 28)]}  # per rank: (rounds, padded rounds, examples)
    losses = {}
    for world in (1, 2):
        runs = tmp_path / f"runs{world}"
        out = spawn_workers(
            small_overrides(small_data, tiny_llm_dir, str(runs)) + common, tmp_path / f"w{world}", world=world
        )
        assert all(isinstance(r, dict) for r in out), out
        plan = [
            (r["validation"]["rounds"], r["validation"]["padded_rounds"], r["validation"]["examples"])
            for r in out
        ]
        assert plan == plans[world] and all(r["validation"]["split_examples"] == 60 for r in out)
        assert all(r["valid_losses"] == out[0]["valid_losses"] for r in out)  # every rank gets the number
        losses[world] = out[0]["valid_losses"]
        assert sorted(losses[world]) == [1, 2] and all(math.isfinite(v) for v in losses[world].values())
        # the checkpoint at the end records the loss of its own step
        last = ck.latest_committed(ck.checkpoints_root(str(runs), "test-run"))
        state = last.load_json(ck.TRAIN_STATE_FILE)
        assert state["valid_step"] == 2 and state["valid_loss"] == losses[world][2]
    for step in (1, 2):
        assert losses[2][step] == pytest.approx(losses[1][step], rel=1e-6, abs=0)


def test_keep_best_keeps_the_lowest_validation_loss_besides_the_newest(small_data, tiny_llm_dir, tmp_path):
    """A run whose validation loss gets worse (lr 100, no clipping: the first update helps, the
    next ones overshoot): the best checkpoint is an old one, and keep_best keeps it besides the
    newest while the ones in between are pruned (pruning itself: tests/unit/test_checkpoint.py)."""
    runs = tmp_path / "runs"
    overrides = small_overrides(small_data, tiny_llm_dir, str(runs)) + [
        "max_steps=4",
        "eval.every_steps=2",
        "eval.max_examples=16",
        "checkpoint.every_steps=1",
        "checkpoint.keep=1",
        "checkpoint.keep_best=true",
        "optim.lr=100",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        "optim.grad_clip=0",
        "model.ep_size=1",
    ]
    out = spawn_workers(overrides, tmp_path / "best", world=1)
    assert all(isinstance(r, dict) for r in out), out
    valid = out[0]["valid_losses"]
    # measured every 2 steps and at every checkpoint (here every step)
    assert sorted(valid) == [1, 2, 3, 4]
    best = min(valid, key=lambda s: (valid[s], s))
    assert best < 4 and valid[best] < valid[4] - 1e-3, valid  # the case keep_best exists for
    root = ck.checkpoints_root(str(runs), "test-run")
    kept = [e.step for e in ck.list_checkpoints(root) if e.committed]
    assert kept == [best, 4], (valid, kept)  # without keep_best: [4]
    assert ck.best_checkpoint(root).step == best
    for e in ck.list_checkpoints(root):
        assert ck.Checkpoint.open(e.url).load_json(ck.TRAIN_STATE_FILE)["valid_loss"] == valid[e.step]


def test_a_dataset_without_the_validation_split_trains_without_it_unless_keep_best(
    small_data, tiny_llm_dir, tmp_path, capfd
):
    base = small_overrides(small_data, tiny_llm_dir, str(tmp_path / "runs")) + [
        "model.ep_size=1",
        "max_steps=2",
        "eval.every_steps=1",
        "eval.split=holdout",  # the prepared dataset has train/valid/test only
    ]
    out = spawn_workers(base, tmp_path / "no-split", world=1)
    assert all(isinstance(r, dict) for r in out), out
    assert out[0]["valid_losses"] == {} and out[0]["step"] == 2
    assert (
        "[train] warning: the dataset has no 'holdout' records: no validation loss" in capfd.readouterr().out
    )
    errs = spawn_workers(base + ["checkpoint.keep_best=true", "run_name=best"], tmp_path / "best", world=1)
    assert len(errs) == 1 and isinstance(errs[0], str)
    assert errs[0].startswith("ValueError: checkpoint.keep_best needs a validation loss, but "), errs[0][:300]
