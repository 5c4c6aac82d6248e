"""Fault-injection seam for tests: kept out of the training loop's signature.

The loop calls `rank_started` once and `before_forward` per micro-batch; both do nothing unless a
test armed them (`arm_nan` in the spawned rank's process, or `$SELLER_DIST_PID_DIR` for the
killed-worker test, which runs under Ray and can only pass environment variables).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

PID_DIR_ENV = "SELLER_DIST_PID_DIR"  # each rank writes rank-<r>.pid there (a test kills one)

_nan_at: tuple[int, int] | None = None  # (rank, 1-based step)


def arm_nan(rank: int, step: int) -> None:
    """Put NaN into `rank`'s inputs at optimizer step `step` (1-based), every micro-batch of it."""
    global _nan_at
    _nan_at = (rank, step)


def disarm() -> None:
    global _nan_at
    _nan_at = None


def rank_started(rank: int) -> None:
    if os.environ.get(PID_DIR_ENV):
        Path(os.environ[PID_DIR_ENV], f"rank-{rank}.pid").write_text(str(os.getpid()))


def before_forward(inputs: dict[str, Any], rank: int, step: int) -> None:
    """`step` is 1-based (the optimizer step being computed)."""
    if _nan_at == (rank, step):
        inputs["hist_rating"] = torch.full_like(inputs["hist_rating"], float("nan"))
