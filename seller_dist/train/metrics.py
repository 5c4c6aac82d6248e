"""Training metrics: throughput and MFU accounting, and one logger for the console, wandb and Ray reports.
`flops_per_step`, `mfu` and `parameter_counts` are the accounting's one statement (4N FLOPs per token through
the frozen LLM, 6N per sample through the trainables; docs/scaling.md), shared by the Trainer's meter,
`seller-dist bench` and the scaling model, so every figure counts the same N.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from seller_dist.config import LoggingConfig
from seller_dist.redact import scrub

if TYPE_CHECKING:
    from seller_dist.model.moe import MoEAdapter
    from seller_dist.model.seller import SellerModel

log = logging.getLogger(__name__)


# dense bf16 peak per device (TFLOP/s, no sparsity): H100 SXM and H200 SXM share the same compute
CHIP_PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0}


def flops_per_step(
    frozen_params: float, trainable_params: float, llm_tokens: float, trainable_tokens: float
) -> float:
    """Estimated training FLOPs of one step: 4N per token through the frozen LLM, 6N trainable."""
    return 4.0 * frozen_params * llm_tokens + 6.0 * trainable_params * trainable_tokens


def mfu(flops: float, seconds: float, peak_tflops: float, num_devices: int = 1) -> float:
    """Model FLOPs utilization: the FLOP/s achieved (`flops` in `seconds`, flops_per_step's
    accounting) over the peak of `num_devices` devices of `peak_tflops` each."""
    return flops / seconds / (peak_tflops * 1e12 * num_devices)


def parameter_counts(model: SellerModel, moe: MoEAdapter | None) -> tuple[int, int]:
    """(frozen, trainable) parameters as the FLOPs accounting counts them: the whole model however it
    is laid out (a ZeRO-3 partitioned parameter by its `ds_numel`, this rank's experts times
    `ep_size`), so every rank, strategy and benchmark reports the same N."""

    def numel(p: Any) -> int:
        return int(getattr(p, "ds_numel", p.numel()))

    frozen = sum(numel(p) for p in model.llm.parameters())
    trainable = sum(numel(p) for _, p in model.trainable_named_parameters())
    if moe is not None:
        trainable += sum(p.numel() for p in moe.parameters()) * model.cfg.ep_size
    return frozen, trainable


@dataclass
class ThroughputMeter:
    """Accumulates steps over a logging window; `summary()` returns rates and resets the window. Feed
    it job-wide numbers (summed over ranks) with `num_devices` = workers, or per-rank numbers with
    `num_devices=1`: MFU comes out the same."""

    frozen_params: int
    trainable_params: int
    peak_tflops: float
    num_devices: int = 1
    _steps: int = 0
    _tokens: int = 0
    _samples: int = 0
    _trainable_tokens: int = 0
    _time: float = 0.0
    _wait: float = 0.0

    def update(
        self,
        llm_tokens: int,
        samples: int,
        step_time_s: float,
        data_wait_s: float = 0.0,
        trainable_tokens: int | None = None,
    ) -> None:
        """One optimizer step: `step_time_s` is wall time of the whole step INCLUDING `data_wait_s`;
        `trainable_tokens` (default: one per sample) counts what passes the trainable modules."""
        if step_time_s <= 0 or data_wait_s < 0 or data_wait_s > step_time_s:
            raise ValueError(
                f"need 0 <= data_wait_s <= step_time_s and step_time_s > 0, got {data_wait_s}, {step_time_s}"
            )
        self._steps += 1
        self._tokens += int(llm_tokens)
        self._samples += int(samples)
        self._trainable_tokens += int(samples if trainable_tokens is None else trainable_tokens)
        self._time += step_time_s
        self._wait += data_wait_s

    def summary(self) -> dict[str, float]:
        if self._steps == 0:
            return {}
        flops = flops_per_step(
            self.frozen_params, self.trainable_params, self._tokens, self._trainable_tokens
        )
        out = {
            "tokens_per_s": self._tokens / self._time,
            "samples_per_s": self._samples / self._time,
            "step_time_s": self._time / self._steps,
            "data_wait_fraction": self._wait / self._time,
            "tflops": flops / self._time / 1e12,
            "mfu": mfu(flops, self._time, self.peak_tflops, self.num_devices),
        }
        self._steps = self._tokens = self._samples = self._trainable_tokens = 0
        self._time = self._wait = 0.0
        return out


def format_line(step: int, metrics: Mapping[str, Any]) -> str:
    parts = [f"step={step}"]
    for k in sorted(metrics):
        if isinstance(metrics[k], (float, int, str, bool)):
            parts.append(f"{k}={_num(metrics[k])}")
    return " ".join(parts)


def format_duration(seconds: float) -> str:
    """`45s`, `3m20s`, `2h05m`."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def progress_line(
    step: int, metrics: Mapping[str, Any], max_steps: int | None = None, eta_s: float | None = None
) -> str:
    """The console's line for one logging interval: step/max, loss, valid loss (when the metrics
    have it), tokens/s (job-wide), time left. Keys stay `key=value` so a log can be grepped."""
    parts = [f"[train] step={step}/{max_steps}" if max_steps else f"[train] step={step}"]
    for key in ("loss", "valid_loss"):
        if key in metrics:
            parts.append(f"{key}={_num(metrics[key])}")
    if "tokens_per_s" in metrics:
        parts.append(f"tokens/s={float(metrics['tokens_per_s']):.0f}")
    if eta_s is not None and max_steps and step < max_steps:
        parts.append(f"eta={format_duration(eta_s)}")
    return " ".join(parts)


class MetricsLogger:
    """Console + wandb on rank 0 (lists such as per-expert load as `key/i` scalars); `ray.train.report`
    on every rank, since Ray Train expects each worker to report. Rank 0 prints `progress_line` to
    `stream` (stdout) and the full `format_line` to `detail_stream` (stderr); the ETA is
    (max_steps - step) x the wall time per step since the previous line (the window's `step_time_s`
    for the first), `max_steps` by default the config's."""

    def __init__(
        self,
        cfg: LoggingConfig,
        run_name: str,
        config: Mapping[str, Any] | None = None,
        rank: int = 0,
        report: Callable[[dict[str, Any]], None] | None = None,
        stream: TextIO | None = None,
        detail_stream: TextIO | None = None,
        max_steps: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cfg, self.rank, self.report = cfg, rank, report
        self.stream = stream or sys.stdout
        self.detail_stream = detail_stream or sys.stderr
        if max_steps is None and config is not None and isinstance(config.get("max_steps"), int):
            max_steps = int(config["max_steps"])
        self.max_steps = max_steps
        self.clock = clock
        self._last: tuple[int, float] | None = None  # (step, time) of the previous line
        self.run = None
        if rank == 0 and cfg.wandb != "disabled":
            import wandb

            self.run = wandb.init(
                project=cfg.wandb_project,
                name=run_name,
                id=run_name,
                resume="allow",
                dir=cfg.wandb_dir,
                mode=cfg.wandb,
                # credential-like keys and values masked; console capture, code/git and machine
                # metadata off, so nothing environment-derived leaves the job
                config=scrub(dict(config or {})),
                settings=wandb.Settings(
                    console="off",
                    disable_code=True,
                    disable_git=True,
                    save_code=False,
                    x_disable_meta=True,
                    x_disable_stats=True,
                    x_disable_machine_info=True,
                    silent=True,
                ),
            )

    @staticmethod
    def flatten(metrics: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in metrics.items():
            if isinstance(v, (list, tuple)):
                out.update({f"{k}/{i}": x for i, x in enumerate(v)})
            else:
                out[k] = v
        return out

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        metrics = dict(metrics)
        if self.rank == 0:
            now = self.clock()
            per_step = metrics.get("step_time_s")
            if self._last is not None and step > self._last[0]:
                per_step = (now - self._last[1]) / (step - self._last[0])
            self._last = (step, now)
            eta = per_step * (self.max_steps - step) if per_step is not None and self.max_steps else None
            print(progress_line(step, metrics, self.max_steps, eta), file=self.stream, flush=True)
            print(format_line(step, self.flatten(metrics)), file=self.detail_stream, flush=True)
            if self.run is not None:
                self.run.log(self.flatten(metrics), step=step)
        if self.report is not None:
            self.report({"step": step, **metrics})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


# ------------------------------------------------------------------------------ step-time split
PHASES = ("data_wait", "forward", "backward", "optimizer")


class NullStepTimer:
    """The default: the training loop calls these hooks and nothing is measured (no syncs, no cost)."""

    enabled = False

    def set_model_size(self, frozen_params: int, trainable_params: int) -> None:
        pass

    def step_begin(self) -> None:
        pass

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def step_end(self, llm_tokens: int, samples: int) -> None:
        pass


class StepTimer(NullStepTimer):
    """Per-step wall time split into phases for `seller-dist bench train`: data_wait, forward,
    backward and optimizer, each MINUS its time inside collectives (`comm_clock()`), which is reported
    as communication, so the parts plus "other" (LR, logging, Ray reports) sum to the step time.
    `sync` (GPU) synchronizes at every boundary, which removes overlap: the split is for attribution,
    the step time for throughput."""

    enabled = True

    def __init__(
        self,
        comm_clock: Callable[[], float] | None = None,
        sync: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.comm_clock = comm_clock or (lambda: 0.0)
        self.sync = sync or (lambda: None)
        self.clock = clock or time.perf_counter
        self.steps: list[dict[str, float]] = []
        self.frozen_params = self.trainable_params = 0
        self._cur: dict[str, float] | None = None
        self._t0 = self._c0 = 0.0

    def set_model_size(self, frozen_params: int, trainable_params: int) -> None:
        self.frozen_params, self.trainable_params = int(frozen_params), int(trainable_params)

    def step_begin(self) -> None:
        self.sync()
        self._cur = dict.fromkeys((*PHASES, "communication"), 0.0)
        self._t0, self._c0 = self.clock(), self.comm_clock()

    def phase(self, name: str) -> _Phase:
        if name not in PHASES:
            raise ValueError(f"unknown phase '{name}', expected one of {PHASES}")
        return _Phase(self, name)

    def step_end(self, llm_tokens: int, samples: int) -> None:
        self.sync()
        cur = self._cur or dict.fromkeys((*PHASES, "communication"), 0.0)
        cur["step"] = self.clock() - self._t0
        cur["communication"] = self.comm_clock() - self._c0
        cur["other"] = max(0.0, cur["step"] - sum(cur[p] for p in (*PHASES, "communication")))
        cur["llm_tokens"], cur["samples"] = float(llm_tokens), float(samples)
        self.steps.append(cur)
        self._cur = None


class _Phase:
    def __init__(self, timer: StepTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.timer.sync()
        self._t, self._c = self.timer.clock(), self.timer.comm_clock()

    def __exit__(self, *exc: object) -> None:
        t = self.timer
        t.sync()
        spent = t.clock() - self._t
        comm = t.comm_clock() - self._c
        if t._cur is not None:
            t._cur[self.name] += max(0.0, spent - comm)
