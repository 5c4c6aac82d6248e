"""The pure pieces one training step is made of, shared by the Trainer, the benchmarks and tests.

LR schedule, per-step seeds, device inputs, the rank's environment and its data: functions of their
arguments only, so a resumed run recomputes exactly what an uninterrupted one used.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from seller_dist.config import OptimConfig, TrainConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.collate import SellerCollator
from seller_dist.data.shards import Manifest
from seller_dist.data.stream import RankLoader
from seller_dist.model.llm_source import load_tokenizer_files, resolve_llm_path


class NonFiniteError(RuntimeError):
    """A NaN/inf loss or gradient norm: raised on every rank at the same step."""


@dataclass
class WorkerResult:
    start_step: int  # 0 for a fresh run, else the step of the checkpoint resumed from
    step: int  # the last completed optimizer step (== max_steps)
    losses: dict[int, float] = field(
        default_factory=dict
    )  # step -> loss averaged over ranks and micro-batches
    checkpoint_url: str | None = None  # the last committed checkpoint
    valid_losses: dict[int, float] = field(default_factory=dict)  # step -> validation loss
    trainable: dict[str, torch.Tensor] | None = None  # full trainable weights (with keep_trainable)


# ------------------------------------------------------------------------------------------ pieces
def setup_rank_env() -> bool:
    """DS_ACCELERATOR=cpu without a GPU (before deepspeed is imported), one intra-op thread per rank
    on CPU (3.4x slower steps otherwise). Returns whether this rank uses a GPU."""
    use_gpu = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"
    if not use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    return use_gpu


def lr_at(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate of the optimizer step with 0-based index `step`: linear warmup, then cosine or
    linear decay to lr * min_lr_ratio at max_steps (a pure function, so resume needs no scheduler state)."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = min(1.0, max(0.0, (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps)))
    if optim.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return optim.lr * (optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * decay)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + micro * 104_729 + rank * 15_485_863) % (2**63 - 1)


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors only, on the device; stream pad rows get no language-model loss (labels -100).
    Copies are asynchronous from pinned memory (seller_dist.data.prefetch pins on a GPU); the pad
    flags are read on the host, so nothing here waits for the device."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v) and k != "pad"}
    pad = batch["pad"]
    if bool(pad.any()):
        out["labels"] = out["labels"].masked_fill(pad.to(device, non_blocking=True)[:, None], -100)
    return out


# ------------------------------------------------------------------------------------ this rank's data
def rank_loader(cfg: TrainConfig, rank: int, world: int) -> tuple[Any, Any]:
    """(manifest, RankLoader): this rank's exact share of the split, collated with the LLM's tokenizer."""
    manifest, _, loader = rank_data(cfg, rank, world)
    return manifest, loader


def rank_data(cfg: TrainConfig, rank: int, world: int) -> tuple[Any, Any, Any]:
    """(manifest, ItemCatalog, RankLoader); the catalog says which item id each item_idx is."""
    manifest = Manifest.load(cfg.data.manifest, cfg.data.storage)
    catalog = ItemCatalog.load(cfg.data.manifest, manifest, cfg.data.storage)
    llm_dir = resolve_llm_path(cfg.model.llm_path, cfg.model.llm_cache_dir, cfg.storage)
    collate = SellerCollator.for_dataset(
        manifest.data["vocab"],
        catalog,
        load_tokenizer_files(llm_dir, cfg.model.trust_remote_code),
        num_soft_tokens=cfg.model.num_soft_tokens,
        history_text=cfg.model.history_text,
        prompt_format=cfg.model.prompt_format,
        instruction=cfg.model.prompt_instruction,
    )
    return manifest, catalog, RankLoader.from_config(cfg.data, rank, world, collate_fn=collate)
