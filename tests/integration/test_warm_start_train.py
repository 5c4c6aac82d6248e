"""Daily retraining end to end: window 1 trained by the real worker (2 gloo ranks, DeepSpeed ZeRO-3,
no Ray), window 2 prepared with vocab_from=window 1 (new users, new items, later timestamps), then
`seller-dist train --set init_from=<window 1's checkpoint>` as a subprocess: preflight, a local Ray,
the TorchTrainer with 2 workers (experts split over both).

Asserts: the job succeeds and says it warm-started; its step-1 loss is below a cold start's on the
same batches (same seed, same data cursor: the real worker without init_from); its checkpoint
records where it started (init_from URL, step, sha256 of the source's COMMITTED marker) and which
items its rows are (dataset.json with window 2's lineage); run again with init_from still set, it
resumes its own checkpoint instead and keeps that record.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from seller_dist.train import checkpoint as ck
from tests.train_helpers import REPO, TRAIN_DEMO, small_overrides, spawn_workers
from tests.warm_start_helpers import prep_window, write_windows

pytestmark = [pytest.mark.slow, pytest.mark.ray]

W1_STEPS = 12
W2_STEPS = 2


def overrides(data: str, llm: str, runs: str, run_name: str, steps: int) -> list[str]:
    return small_overrides(data, llm, runs) + [
        f"run_name={run_name}",
        f"max_steps={steps}",
        "checkpoint.every_steps=0",
        "model.dropout=0.0",
        "optim.lr=0.02",
        "optim.warmup_steps=2",
    ]


def test_train_window2_from_window1_checkpoint(tiny_llm_dir, tmp_path):
    raw1, raw2 = write_windows(tmp_path)
    d1, d2 = str(tmp_path / "d1"), str(tmp_path / "d2")
    prep_window(raw1, Path(d1))
    m2 = prep_window(raw2, Path(d2), vocab_from=d1)
    assert m2["lineage"]["parent"] == d1
    runs = str(tmp_path / "runs")

    # window 1: the real worker, no Ray
    w1 = spawn_workers(overrides(d1, tiny_llm_dir, runs, "day-1", W1_STEPS), tmp_path / "w1")
    assert all(isinstance(r, dict) for r in w1), w1
    src = ck.latest_committed(ck.checkpoints_root(runs, "day-1"))
    assert src is not None and src.step == W1_STEPS
    assert src.load_json(ck.DATASET_FILE)["item_ids"][:3] == ["i000", "i001", "i002"]

    # window 2, cold: the same batches and seed without init_from (the real worker, no Ray)
    cold = spawn_workers(overrides(d2, tiny_llm_dir, runs, "day-2-cold", 1), tmp_path / "cold")
    assert all(isinstance(r, dict) for r in cold), cold

    # window 2, warm: `seller-dist train` through preflight and a local Ray
    sets = overrides(d2, tiny_llm_dir, runs, "day-2", W2_STEPS) + [f"init_from={src.url}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    token = tmp_path / "ray-token"  # the local Ray's auth token, kept out of ~/.ray
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),  # the driver and its Ray workers import this checkout
        RAY_AUTH_TOKEN_PATH=str(token),
        TORCH_EXTENSIONS_DIR=str(REPO / ".cache" / "torch_extensions"),
    )
    cmd = [sys.executable, "-m", "seller_dist.cli", "train", "--config", str(TRAIN_DEMO)]
    cmd += [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-4000:]
    assert (
        f"warm start from {src.url} (step {W1_STEPS}): item rows by index (lineage), 40 carried, 11 new"
        in logs
    )

    losses = {int(s): float(v) for s, v in re.findall(r"\bstep=(\d+)\b[^\n]*?\bloss=([0-9.eE+-]+)", logs)}
    assert sorted(losses) == list(range(1, W2_STEPS + 1)), logs[-3000:]
    assert losses[1] < cold[0]["losses"][1] - 0.05, (losses, cold[0]["losses"])

    new = ck.latest_committed(ck.checkpoints_root(runs, "day-2"))
    assert new is not None and new.step == W2_STEPS
    init = new.load_json(ck.TRAIN_STATE_FILE)["init_from"]
    marker_sha = hashlib.sha256(Path(src.url, ck.COMMIT_MARKER).read_bytes()).hexdigest()
    assert (init["url"], init["step"], init["sha256"]) == (src.url, W1_STEPS, marker_sha)
    assert init["item_rows"] == "index"
    dataset = new.load_json(ck.DATASET_FILE)
    assert dataset["url"] == d2 and len(dataset["item_ids"]) == 51
    assert dataset["lineage"]["parent_manifest_sha256"] == src.load_text(ck.MANIFEST_HASH_FILE).strip()

    # the same run again, init_from still set: it resumes its own checkpoint (resume wins) and keeps
    # recording where its weights first came from
    again = overrides(d2, tiny_llm_dir, runs, "day-2", W2_STEPS + 1) + [f"init_from={src.url}"]
    resumed = spawn_workers(again, tmp_path / "again")
    assert all(isinstance(r, dict) for r in resumed), resumed
    assert [r["start_step"] for r in resumed] == [W2_STEPS, W2_STEPS]
    last = ck.latest_committed(ck.checkpoints_root(runs, "day-2"))
    assert last is not None and last.step == W2_STEPS + 1
    assert last.load_json(ck.TRAIN_STATE_FILE)["init_from"] == init
