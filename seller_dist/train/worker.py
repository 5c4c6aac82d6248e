"""Entry points of a training rank: `train_worker(cfg)` trains one rank (Ray Train calls it through
`ray_train_loop`; tests and `seller-dist bench train` call it in spawned processes). The loop itself
is seller_dist.train.trainer.Trainer; the pure pieces of its step are in seller_dist.train.step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seller_dist.config import TrainConfig, from_dict
from seller_dist.logs import setup_logging
from seller_dist.train.step import WorkerResult
from seller_dist.train.trainer import Trainer


def train_worker(
    cfg: TrainConfig,
    report: Callable[[dict[str, Any]], None] | None = None,
    timer: Any = None,
) -> WorkerResult:
    """Train this rank (torch.distributed env vars or an initialized process group expected).
    `timer`: a seller_dist.train.metrics.StepTimer to split each step's time into phases
    (`seller-dist bench train`); the default measures nothing and changes nothing."""
    setup_logging()  # this process's stage lines on its stdout, as the CLI's are
    return Trainer(cfg, report=report, timer=timer).fit()


def ray_train_loop(loop_config: dict[str, Any]) -> None:
    """The `train_loop_per_worker` of the TorchTrainer (seller_dist.train.driver)."""
    import ray.train

    cfg = from_dict(TrainConfig, loop_config["config"])
    result = train_worker(cfg, report=ray.train.report)
    ray.train.report(
        {"step": result.step, "done": True, "checkpoint_url": result.checkpoint_url or "", "final": True}
    )
