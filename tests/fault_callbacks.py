"""Test hooks into the Trainer's loop (seller_dist.train.callbacks): faults injected on purpose and
calls recorded. A test names them in the train config, e.g.
`callbacks=[{class_path: tests.fault_callbacks:NanInputs, init_args: {rank: 1, step: 2}}]`, so
they reach spawned gloo ranks and the workers of a `ray job submit` (its working_dir holds tests/)
alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from seller_dist.train.callbacks import TrainerCallback


def entry(cls: type[TrainerCallback], **init_args: Any) -> dict[str, Any]:
    """One `callbacks` entry of a train config for a class of this module."""
    return {"class_path": f"{__name__}:{cls.__name__}", "init_args": init_args}


def override(*entries: dict[str, Any]) -> str:
    """A `--set callbacks=...` override (JSON is YAML, so any path in init_args survives)."""
    return f"callbacks={json.dumps(list(entries))}"


class NanInputs(TrainerCallback):
    """NaN ratings in `rank`'s inputs at optimizer step `step` (1-based), every micro-batch of it."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def before_forward(self, inputs: dict[str, Any], rank: int, step: int) -> None:
        if (rank, step) == (self.rank, self.step):
            inputs["hist_rating"] = torch.full_like(inputs["hist_rating"], float("nan"))


class WritePidFile(TrainerCallback):
    """Each rank writes its process id to `<pid_dir>/rank-<r>.pid` (a test kills one by PID)."""

    def __init__(self, pid_dir: str):
        self.pid_dir = pid_dir

    def on_rank_start(self, rank: int) -> None:
        Path(self.pid_dir, f"rank-{rank}.pid").write_text(str(os.getpid()))


class RecordCalls(TrainerCallback):
    """Appends one JSON line per hook call to `<out_dir>/calls-rank<r>.jsonl`: the hook, `tag`,
    the rank and step it was given, and whether the ratings were already NaN."""

    def __init__(self, out_dir: str, tag: str = ""):
        self.out_dir, self.tag = out_dir, tag

    def _write(self, rank: int, record: dict[str, Any]) -> None:
        with Path(self.out_dir, f"calls-rank{rank}.jsonl").open("a") as f:
            f.write(json.dumps({"tag": self.tag, "rank": rank, **record}) + "\n")

    def on_rank_start(self, rank: int) -> None:
        self._write(rank, {"hook": "on_rank_start"})

    def before_forward(self, inputs: dict[str, Any], rank: int, step: int) -> None:
        nan = bool(torch.isnan(inputs["hist_rating"]).any())
        self._write(rank, {"hook": "before_forward", "step": step, "nan": nan})
