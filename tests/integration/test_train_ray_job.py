"""End to end on a real local Ray cluster: `ray job submit` of `seller-dist train` with 2 CPU workers,
ZeRO-3, expert-parallel size 2, data streamed from the S3 server and checkpoints written to it; one
worker is killed by its PID after a committed checkpoint.

Asserts: the job SUCCEEDED; Ray restarted the worker group (max_failures=1) and the workers resumed
from a committed checkpoint; the final committed checkpoint on S3 holds exactly the trainable weights
of an uninterrupted run with the same seed (bitwise: CPU/gloo reductions run in a fixed order and
every random draw is seeded per step and rank, so a correct resume leaves no trace); the logged loss
went down. One job covers both the end-to-end and the fault test to keep CI time down (a Ray head
and a job cost about 30 s before the first step). Then `seller-dist eval` of the run's checkpoints
folder is submitted to the same cluster (2 Ray workers, data and report on S3) and its report names
the step-12 checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest
import torch

from seller_dist.config import StorageConfig
from seller_dist.train import checkpoint as ck
from tests.conftest import S3_ENV, free_port
from tests.fault_callbacks import WritePidFile, entry, override
from tests.train_helpers import REPO, prep_small, small_overrides, spawn_workers

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MAX_STEPS = 12
EVAL_OVERRIDES = [
    "limit=8",
    "workers.num_workers=2",
    "generation.batch_size=4",
    "generation.max_new_tokens=8",
    "text.bertscore=false",
    "simulator.enabled=false",
]
RAY = str(REPO / ".venv" / "bin" / "ray")


def run(cmd: list[str], env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def submit(cmd: list[str], env: dict, tries: int = 30) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the new head's job agent has not registered yet: on a loaded
    machine a submit right after `ray start` got "No available agent to submit job, please try again
    later" (a 500 from the dashboard), which is Ray asking for exactly this."""
    for _ in range(tries):
        sub = run(cmd, env)
        if sub.returncode == 0 or "No available agent" not in sub.stdout + sub.stderr:
            return sub
        time.sleep(2)
    return sub


def committed_steps(root: str) -> list[int]:
    try:
        return [e.step for e in ck.list_checkpoints(root) if e.committed]
    except FileNotFoundError:
        return []


def wait_for(pred, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def final_weights(ckpt: ck.Checkpoint) -> dict[str, torch.Tensor]:
    out = dict(ckpt.load_tensors(ck.DENSE_FILE))
    for e in range(2):
        out.update({f"moe{e}.{k}": v for k, v in ckpt.load_tensors(ck.moe_file(e)).items()})
    return out


def test_ray_job_on_s3_survives_a_killed_worker(s3_server, s3_bucket, tiny_llm_dir, tmp_path):
    data, runs = f"{s3_bucket}/data", f"{s3_bucket}/runs"
    prep_small(data)
    pids = tmp_path / "pids"
    pids.mkdir()
    numerics = [f"max_steps={MAX_STEPS}", "optim.lr=0.1"]  # lr 0.1: the loss drops clearly in 12 steps
    overrides = (
        small_overrides(data, tiny_llm_dir, runs)
        + numerics
        + [
            "logging.every_steps=4",  # logged loss = mean over 4 steps
            "workers.max_failures=1",
            "logging.wandb=offline",
            f"logging.wandb_dir={tmp_path / 'wandb'}",
            # each rank writes its PID file (a config callback from the uploaded tests/ folder)
            override(entry(WritePidFile, pid_dir=str(pids))),
        ]
    )
    port, dash, client = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RAY_LOCAL_STATE": str(tmp_path / "state"),
        "RAY_PORT": str(port),
        "RAY_DASHBOARD_PORT": str(dash),
        "RAY_CLIENT_PORT": str(client),
        "RAY_NUM_CPUS": "2",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "ray-token"),  # `up` creates it
        "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
        "OMP_NUM_THREADS": "1",
    }
    runtime_env = {
        "working_dir": ".",
        "excludes": [".venv", ".cache", "outputs", "runs", "wandb", ".git"],
        "env_vars": {
            **S3_ENV,  # the moto server's dummy keys; a real cluster uses roles / its own env
            "AWS_ENDPOINT_URL": s3_server,
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "offline",
            "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"),
        },
    }
    root = ck.checkpoints_root(runs, "test-run")
    up = run(["./launch.sh", "local-cluster", "up"], env)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        cmd = [
            RAY,
            "job",
            "submit",
            "--no-wait",
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps(runtime_env),
        ]
        cmd += [
            "--",
            "python",
            "-m",
            "seller_dist.cli",
            "train",
            "--config",
            "seller_dist/configs/train_demo.yaml",
        ]
        cmd += [arg for o in overrides for arg in ("--set", o)]
        sub = submit(cmd, env)
        assert sub.returncode == 0, (sub.stdout + sub.stderr)[-3000:]
        job_id = re.search(r"(raysubmit_\w+)", sub.stdout + sub.stderr).group(1)

        # kill rank 1's process once a checkpoint is committed (mid-run: 12 steps, one every 3)
        first = wait_for(lambda: committed_steps(root), 240, "the first committed checkpoint", poll=0.5)
        assert first[0] == 3
        pid = int((pids / "rank-1.pid").read_text())
        os.kill(pid, signal.SIGKILL)

        def finished():
            # the job API over HTTP with the cluster's token: a `ray job status` CLI per poll would
            # take a core from the 2-worker job it is waiting for
            request = urllib.request.Request(
                f"http://127.0.0.1:{dash}/api/jobs/{job_id}",
                headers={"Authorization": f"Bearer {(tmp_path / 'ray-token').read_text().strip()}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                status = json.loads(response.read())["status"]
            return status if status in ("SUCCEEDED", "FAILED", "STOPPED") else None

        status = None
        with contextlib.suppress(AssertionError):  # a timeout is reported below, with the job's logs
            status = wait_for(finished, 300, "the job to finish", poll=2.0)
        logs = run([RAY, "job", "logs", job_id], env).stdout
        assert status == "SUCCEEDED", f"job status {status}; logs:\n{logs[-6000:]}"

        # the eval job of the run's newest checkpoint, submitted the same way, 2 Ray workers, S3 in and out
        evaluation = [*cmd[: cmd.index("--") + 1], "python", "-m", "seller_dist.cli", "eval"]
        evaluation += ["--checkpoint", root, "--data", data, "--out", f"{s3_bucket}/eval"]
        for o in EVAL_OVERRIDES:
            evaluation += ["--set", o]
        sub = run(evaluation, env)
        assert sub.returncode == 0, (sub.stdout + sub.stderr)[-3000:]
        eval_id = re.search(r"(raysubmit_\w+)", sub.stdout + sub.stderr).group(1)
        job_id = eval_id
        eval_status = None
        with contextlib.suppress(AssertionError):
            eval_status = wait_for(finished, 240, "the eval job to finish", poll=2.0)
        eval_logs = run([RAY, "job", "logs", eval_id], env).stdout
        assert eval_status == "SUCCEEDED", f"eval job status {eval_status}; logs:\n{eval_logs[-6000:]}"
    finally:
        down = run(["./launch.sh", "local-cluster", "down"], env)
    assert down.returncode == 0, down.stderr[-2000:]

    # the console a person reads: our lines only, Ray's internals in the run's log file
    assert "Reporting training result" not in logs and "(RayTrainWorker pid=" not in logs, logs[-3000:]
    # the worker group was restarted and resumed from a committed checkpoint
    resumed = [int(s) for s in re.findall(r"resumed from \S+/step-(\d{8})", logs)]
    assert resumed and resumed[0] >= 3, logs[-5000:]
    assert int((pids / "rank-1.pid").read_text()) != pid  # a new process for rank 1
    latest = ck.latest_committed(root, StorageConfig())
    assert latest is not None and latest.step == MAX_STEPS

    # the loss went down: mean of steps 9-12 vs steps 1-4 (a window logged again after the restart: last wins)
    losses = {int(s): float(v) for s, v in re.findall(r"\bstep=(\d+)\b[^\n]*?\bloss=([0-9.eE+-]+)", logs)}
    assert sorted(losses) == [4, 8, 12], logs[-3000:]
    assert losses[12] < losses[4] - 0.1, losses

    # same final trainable weights as an uninterrupted run with the same seed (no Ray, same S3 data)
    ref_runs = tmp_path / "ref-runs"
    ref = spawn_workers(small_overrides(data, tiny_llm_dir, str(ref_runs)) + numerics, tmp_path / "ref")
    assert all(isinstance(r, dict) for r in ref), ref
    ref_ckpt = ck.latest_committed(ck.checkpoints_root(str(ref_runs), "test-run"))
    assert ref_ckpt is not None and ref_ckpt.step == MAX_STEPS
    got, want = final_weights(latest), final_weights(ref_ckpt)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert torch.equal(got[name], value), name

    # the eval job read the committed step-12 checkpoint from S3 and wrote its report there
    from seller_dist import storage

    report = json.loads(storage.read_bytes(f"{s3_bucket}/eval/report.json"))
    assert report["run_config"]["checkpoint"] == latest.url and report["run_config"]["step"] == MAX_STEPS
    assert report["num_examples"] == 8 and report["generation"]["num_workers"] == 2
    lines = storage.read_bytes(f"{s3_bucket}/eval/generations.jsonl").decode().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["system"] == "seller" for x in lines)
