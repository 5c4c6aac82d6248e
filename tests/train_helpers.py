"""Shared pieces of the training tests (tests/integration/test_train_*.py): a small prepared
synthetic dataset, a train config over it, and a spawner of in-process gloo ranks that call the
worker function directly (no Ray)."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import torch

from seller_dist.bench.local_services import rank_env as local_rank_env
from seller_dist.config import PrepConfig, TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TRAIN_DEMO = REPO / "seller_dist" / "configs" / "train_demo.yaml"
PREP_SYNTHETIC = REPO / "seller_dist" / "configs" / "prep_synthetic.yaml"


def prep_small(output: str) -> dict[str, Any]:
    """The embedded synthetic prep config with 60 users (about 900 train records, under a second)."""
    from data_prep.pipeline import run_prep

    cfg = load_config(
        PrepConfig, PREP_SYNTHETIC, [f"output={output}", "overwrite=true", "source_options.num_users=60"]
    )
    return run_prep(cfg)


def small_overrides(data: str, llm: str, runs: str) -> list[str]:
    """The demo train config shrunk for tests: tiny model, 6 steps, no wandb."""
    return [
        f"data.manifest={data}",
        f"model.llm_path={llm}",
        f"storage_path={runs}",
        "run_name=test-run",
        "max_steps=6",
        "data.batch_size=4",
        "model.d_model=32",
        "model.num_layers=1",
        "model.expert_hidden=32",
        "optim.warmup_steps=2",
        "optim.lr=0.01",
        "checkpoint.every_steps=3",
        "checkpoint.keep=3",
        "logging.every_steps=1",
        "logging.wandb=disabled",
    ]


def train_config(overrides: list[str]) -> TrainConfig:
    return load_config(TrainConfig, TRAIN_DEMO, overrides)


def rank_env(rank: int, world: int, port: int) -> None:
    """The torch.distributed environment of a spawned CPU rank (gloo on 127.0.0.1, one thread)."""
    local_rank_env(rank, world, port, cpu=True)


def _rank_main(rank: int, world: int, port: int, overrides: list[str], out_dir: str, kwargs: dict) -> None:
    rank_env(rank, world, port)
    import torch.distributed as dist

    from seller_dist.logs import setup_logging

    setup_logging()  # the stage lines on this rank's stdout, as train_worker sets them up
    code = 0
    try:
        from seller_dist.train.step import NonFiniteError
        from seller_dist.train.trainer import Trainer

        trainer = Trainer(
            train_config(overrides), timer=kwargs.get("timer"), callbacks=kwargs.get("callbacks", ())
        )
        try:
            r = trainer.fit()
        except NonFiniteError:  # every rank stopped at the same point: the weights as they are now
            weights = {k: v.cpu() for k, v in trainer.state.trainable_state_dict().items()}
            torch.save(weights, Path(out_dir, f"rank{rank}.stopped.pt"))
            raise
        v = trainer.validator
        torch.save(
            {
                "start_step": r.start_step,
                "step": r.step,
                "losses": r.losses,
                "valid_losses": r.valid_losses,
                "checkpoint_url": r.checkpoint_url,
                # this rank's validation plan: forward passes, padded ones, examples it counts
                "validation": None
                if v is None
                else {
                    "rounds": v.rounds,
                    "padded_rounds": v.padded_rounds,
                    "examples": v.rank_examples,
                    "split_examples": v.examples,
                },
            },
            Path(out_dir, f"rank{rank}.pt"),
        )
    except BaseException as e:  # the test reads the message
        Path(out_dir, f"rank{rank}.err").write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os._exit(code)


def spawn_workers(overrides: list[str], out: Path, world: int = 2, **kwargs: Any) -> list[dict] | list[str]:
    """Run `train_worker` on `world` gloo ranks; the ranks' results, or their error texts if any failed.
    `callbacks=[...]` (picklable TrainerCallbacks) go to each rank's Trainer after the config's own
    `callbacks`; tests/fault_callbacks.py has the fault injectors."""
    from tests.conftest import free_port
    from tests.ranks import spawn_ranks

    out.mkdir(parents=True, exist_ok=True)
    try:
        spawn_ranks(_rank_main, (world, free_port(), overrides, str(out), kwargs), world)
    except Exception:
        errs = [p.read_text() for p in sorted(out.glob("rank*.err"))]
        if errs:
            return errs
        raise
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
