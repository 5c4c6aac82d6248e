"""Throughput / MFU accounting against hand-computed numbers and the logger's three sinks (stdout,
wandb offline files, Ray report callback). Secret scrubbing: tests/unit/test_secrets.py."""

from __future__ import annotations

import io
import time
import types
from pathlib import Path

import pytest
import torch

from seller_dist.config import LoggingConfig
from seller_dist.redact import REDACTED
from seller_dist.train.metrics import (
    MetricsLogger,
    ThroughputMeter,
    flops_per_step,
    format_duration,
    mfu,
    parameter_counts,
    progress_line,
)


def test_flops_follow_4n_frozen_6n_trainable():
    assert flops_per_step(
        frozen_params=1_000_000, trainable_params=10_000, llm_tokens=300, trainable_tokens=8
    ) == (4 * 1_000_000 * 300 + 6 * 10_000 * 8)


def test_mfu_is_the_achieved_flops_over_the_devices_peak():
    # 4 x 1e9 x 1000 + 6 x 1e6 x 10 = 4.00006e12 FLOPs in 4 s = 1.000015e12 FLOP/s, against two
    # devices of 0.5 TFLOP/s: 1.000015
    flops = flops_per_step(frozen_params=1e9, trainable_params=1e6, llm_tokens=1000, trainable_tokens=10)
    assert flops == 4.00006e12
    assert mfu(flops, seconds=4.0, peak_tflops=0.5, num_devices=2) == pytest.approx(1.000015)
    assert mfu(flops, seconds=4.0, peak_tflops=0.5) == pytest.approx(2.00003)


def test_parameter_counts_take_partitioned_sizes_and_every_experts_copy():
    class Partitioned(torch.nn.Parameter):  # a ZeRO-3 parameter: 0 elements here, ds_numel whole
        ds_numel = 300

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = torch.nn.Linear(10, 10)  # 110 frozen parameters
            self.dense = torch.nn.Linear(4, 2)  # 10 trainable
            self.cfg = types.SimpleNamespace(ep_size=2)

        def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
            return [("dense.weight", self.dense.weight), ("dense.bias", self.dense.bias)]

    model = Model()
    moe = torch.nn.Linear(3, 2)  # this rank's 8 expert parameters; ep_size 2 ranks hold the rest
    assert parameter_counts(model, moe) == (110, 10 + 8 * 2)
    assert parameter_counts(model, None) == (110, 10)
    model.llm.weight = Partitioned(torch.empty(0))
    assert parameter_counts(model, None) == (300 + 10, 10)


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
    out0, out1, detail0, detail1 = io.StringIO(), io.StringIO(), io.StringIO(), io.StringIO()
    cfg = LoggingConfig(wandb="disabled")
    r0 = MetricsLogger(cfg, "run", rank=0, report=reports.append, stream=out0, detail_stream=detail0)
    r1 = MetricsLogger(cfg, "run", rank=1, report=reports.append, stream=out1, detail_stream=detail1)
    r0.log(5, {"loss": 1.23456, "expert_load": [0.5, 0.25], "mfu": 0.01})
    r1.log(5, {"loss": 1.5})
    assert out0.getvalue() == "[train] step=5 loss=1.235\n"  # the console's line
    # every scalar, for the log file
    assert detail0.getvalue() == "step=5 expert_load/0=0.5 expert_load/1=0.25 loss=1.235 mfu=0.01\n"
    assert out1.getvalue() == detail1.getvalue() == ""  # only rank 0 prints
    assert reports == [
        {"step": 5, "loss": 1.23456, "expert_load": [0.5, 0.25], "mfu": 0.01},
        {"step": 5, "loss": 1.5},
    ]


def test_progress_line_step_of_max_losses_throughput_and_eta():
    """One line per logging interval: step/max, loss, valid loss when the loop gives one, job-wide
    tokens/s, time left from the wall time between lines (the window's step time for the first)."""
    now = [100.0]
    out = io.StringIO()
    logger = MetricsLogger(
        LoggingConfig(wandb="disabled"),
        "run",
        config={"max_steps": 500},  # max_steps comes from the run's config
        stream=out,
        detail_stream=io.StringIO(),
        clock=lambda: now[0],
    )
    base = {"loss": 2.34567, "aux_loss": 1.1, "lr": 0.003, "tokens_per_s": 8862.4, "step_time_s": 0.5}
    logger.log(100, base)
    now[0] += 120.0  # 100 steps in 2 minutes (checkpoints included): 1.2 s per step
    logger.log(200, {**base, "valid_loss": 2.5})
    logger.log(500, base)
    assert out.getvalue().splitlines() == [
        "[train] step=100/500 loss=2.346 tokens/s=8862 eta=3m20s",  # 400 x 0.5 s
        "[train] step=200/500 loss=2.346 valid_loss=2.5 tokens/s=8862 eta=6m00s",  # 300 x 1.2 s
        "[train] step=500/500 loss=2.346 tokens/s=8862",  # done: no time left to show
    ]
    assert progress_line(3, {"loss": float("nan")}) == "[train] step=3 loss=nan"
    assert [format_duration(s) for s in (0, 44.6, 60, 3599, 3600, 7530)] == [
        "0s",
        "45s",
        "1m00s",
        "59m59s",
        "1h00m",
        "2h05m",
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
