"""Throughput / MFU accounting against hand-computed numbers and the logger's three sinks (stdout,
wandb offline files, Ray report callback). Secret scrubbing: tests/unit/test_secrets.py."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from seller_dist.config import LoggingConfig
from seller_dist.redact import REDACTED
from seller_dist.train.metrics import MetricsLogger, ThroughputMeter, flops_per_step


def test_flops_follow_4n_frozen_6n_trainable():
    assert flops_per_step(
        frozen_params=1_000_000, trainable_params=10_000, llm_tokens=300, trainable_tokens=8
    ) == (4 * 1_000_000 * 300 + 6 * 10_000 * 8)


def test_throughput_window_rates_and_mfu():
    m = ThroughputMeter(frozen_params=2_000_000, trainable_params=50_000, peak_tflops=0.5, num_devices=2)
    m.update(llm_tokens=1000, samples=16, step_time_s=0.5, data_wait_s=0.1)
    m.update(llm_tokens=3000, samples=16, step_time_s=1.5, data_wait_s=0.3, trainable_tokens=64)
    s = m.summary()
    flops = 4 * 2_000_000 * 4000 + 6 * 50_000 * (16 + 64)
    assert s["tokens_per_s"] == pytest.approx(4000 / 2.0)
    assert s["samples_per_s"] == pytest.approx(32 / 2.0)
    assert s["step_time_s"] == pytest.approx(1.0)
    assert s["data_wait_fraction"] == pytest.approx(0.4 / 2.0)
    assert s["tflops"] == pytest.approx(flops / 2.0 / 1e12)
    assert s["mfu"] == pytest.approx(flops / 2.0 / (0.5e12 * 2))
    assert m.summary() == {}  # the window was reset
    with pytest.raises(ValueError, match="data_wait_s <= step_time_s"):
        m.update(llm_tokens=1, samples=1, step_time_s=0.1, data_wait_s=0.2)


def test_logger_stdout_and_ray_report_on_every_rank():
    reports: list[dict] = []
    out0, out1 = io.StringIO(), io.StringIO()
    cfg = LoggingConfig(wandb="disabled")
    r0 = MetricsLogger(cfg, "run", rank=0, report=reports.append, stream=out0)
    r1 = MetricsLogger(cfg, "run", rank=1, report=reports.append, stream=out1)
    r0.log(5, {"loss": 1.23456, "expert_load": [0.5, 0.25], "mfu": 0.01})
    r1.log(5, {"loss": 1.5})
    assert out0.getvalue() == "step=5 expert_load/0=0.5 expert_load/1=0.25 loss=1.235 mfu=0.01\n"
    assert out1.getvalue() == ""  # only rank 0 prints
    assert reports == [
        {"step": 5, "loss": 1.23456, "expert_load": [0.5, 0.25], "mfu": 0.01},
        {"step": 5, "loss": 1.5},
    ]


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics_and_no_secret(tmp_path, monkeypatch):
    """A real wandb offline run: files on disk, metric keys logged, the secret nowhere in them."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    secret = "SuperSecretValue-1234567890"
    cfg = LoggingConfig(wandb="offline", wandb_dir=str(tmp_path), wandb_project="p")
    logger = MetricsLogger(
        cfg,
        "run-a",
        config={"optim": {"lr": 0.01}, "storage": {"aws_secret_access_key": secret}},
        stream=io.StringIO(),
    )
    for step in range(1, 4):
        logger.log(step, {"loss": 2.0 / step, "aux_loss": 0.1, "expert_load": [0.6, 0.4]})
    logger.close()

    def read_all() -> tuple[list[Path], bytes]:
        files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
        return files, b"".join(p.read_bytes() for p in files)

    # wandb's separate service process writes the run file; under load it can land a moment
    # after finish() returns (seen once in CI), so wait for it with a deadline
    deadline = time.monotonic() + 30
    files, blob = read_all()
    while b"expert_load/1" not in blob and time.monotonic() < deadline:
        time.sleep(0.2)
        files, blob = read_all()
    assert any(p.suffix == ".wandb" for p in files)
    assert secret.encode() not in blob
    assert b"aux_loss" in blob and b"expert_load/1" in blob
    assert b"aws_secret_access_key" in blob and REDACTED.encode() in blob  # the key logged, its value not
