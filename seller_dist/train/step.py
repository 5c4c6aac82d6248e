"""One training step, written once: `TrainStep` (a whole optimizer step over a strategy's prepared
state) and the pure pieces it is made of. The Trainer's `train_step` is a TrainStep, and `seller-dist bench
train` and seller_dist.bench.gpu time TrainSteps over either strategy, so what they measure is the job's
step (its rules: docs/training.md, "One step").
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from seller_dist.config import OptimConfig, TrainConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.collate import SellerCollator
from seller_dist.data.shards import Manifest
from seller_dist.data.stream import RankLoader
from seller_dist.model.llm_source import load_tokenizer_files, resolve_llm_path
from seller_dist.train.callbacks import CallbackList, TrainerCallback
from seller_dist.train.metrics import NullStepTimer

if TYPE_CHECKING:
    from seller_dist.train.strategy import StrategyState


class NonFiniteError(RuntimeError):
    """A NaN/inf loss or gradient norm: raised on every rank at the same step."""


@dataclass
class WorkerResult:
    start_step: int  # 0 for a fresh run, else the step of the checkpoint resumed from
    step: int  # the last completed optimizer step (== max_steps)
    losses: dict[int, float] = field(default_factory=dict)  # step -> loss (mean of ranks and micro-batches)
    checkpoint_url: str | None = None  # the last committed checkpoint
    valid_losses: dict[int, float] = field(default_factory=dict)  # step -> validation loss


# ------------------------------------------------------------------------------------------ pieces
def setup_rank_env() -> bool:
    """DS_ACCELERATOR=cpu without a GPU (before deepspeed is imported), one intra-op thread per rank
    on CPU (ranks sharing cores otherwise oversubscribe them). Returns whether this rank uses a GPU."""
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
    """Tensors only, on the device; stream pad rows get no loss (labels -100, hist_cited -1).
    Copies are asynchronous from pinned memory (seller_dist.data.prefetch pins on a GPU); the pad
    flags are read on the host, so nothing here waits for the device."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v) and k != "pad"}
    pad = batch["pad"]
    if bool(pad.any()):
        on_device = pad.to(device, non_blocking=True)
        out["labels"] = out["labels"].masked_fill(on_device[:, None], -100)
        if "hist_cited" in out:  # nor a cited-event loss
            out["hist_cited"] = out["hist_cited"].masked_fill(on_device, -1)
    return out


# ------------------------------------------------------------------------------------------ the step
LOSSES = ("loss", "aux_loss", "cited_event_loss")  # what each micro-batch reports, in this order


@dataclass
class StepStats:
    """One optimizer step, every rank's numbers combined."""

    loss: float  # mean over ranks and micro-batches: what the optimizer minimizes
    aux_loss: float  # the MoE's load-balancing loss, unweighted
    cited_event_loss: float  # the fusion's cited-event loss, unweighted (0 when model says 0)
    grad_norm: float  # global: dense + every expert, before clipping
    lr: float
    tokens: int  # LLM tokens of real (non-pad) rows, all ranks
    samples: int
    seconds: float
    data_wait: float  # of which this rank waited for batches
    own_tokens: int = 0  # this rank's
    own_samples: int = 0
    expert_load: torch.Tensor | None = field(default=None, repr=False)  # this rank's, on the device


@dataclass
class TrainStep:
    """`train_step(step)` runs optimizer step `step` (0-based) over `state`: `optim.grad_accum`
    micro-batches taken from `batches` (host batches with their `pad` flags, as the Prefetcher hands
    them), one exchange of every rank's losses, clip, optimizer step. The state is a strategy's
    (DeepSpeedStrategy.prepare or TorchStrategy.prepare); `timer` splits the step into phases
    (seller_dist.train.metrics.StepTimer); `callbacks` see each micro-batch's inputs."""

    state: StrategyState
    optim: OptimConfig
    max_steps: int  # the LR schedule's horizon
    seed: int
    batches: Iterator[dict[str, Any]]
    device: torch.device
    rank: int = 0
    world: int = 1
    timer: NullStepTimer = field(default_factory=NullStepTimer)
    callbacks: TrainerCallback = field(default_factory=CallbackList)

    def __post_init__(self) -> None:
        if self.state.grad_accum != self.optim.grad_accum:
            raise ValueError(
                f"the strategy accumulates {self.state.grad_accum} micro-batches per step, "
                f"optim.grad_accum says {self.optim.grad_accum}: build both from the same config"
            )

    def __call__(self, step: int) -> StepStats:
        state, timer, accum = self.state, self.timer, self.optim.grad_accum
        t0 = time.perf_counter()
        lr = lr_at(step, self.optim, self.max_steps)
        for opt in state.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        # per micro-batch: [loss, aux, cited-event loss] (seller_dist.model.seller.SellerModel.forward)
        losses = torch.zeros(accum, len(LOSSES), dtype=torch.float64, device=self.device)
        wait, tokens, samples, expert_load = 0.0, 0, 0, None
        for micro in range(accum):
            tw = time.perf_counter()
            with timer.phase("data_wait"):
                batch = next(self.batches)
            wait += time.perf_counter() - tw
            real = ~batch["pad"]
            tokens += int(batch["attention_mask"][real].sum())
            samples += int(real.sum())
            inputs = model_inputs(batch, self.device)
            self.callbacks.before_forward(inputs, self.rank, step + 1)
            torch.manual_seed(step_seed(self.seed, step, micro, self.rank))
            with timer.phase("forward"):
                out = state.forward(inputs)
            losses[micro] = torch.stack([out[k].detach().double() for k in LOSSES])
            with timer.phase("backward"):
                state.backward(out["loss"])
            load = out["expert_load"].float()
            expert_load = load if expert_load is None else expert_load + load
            if micro < accum - 1:
                state.step()  # DeepSpeed's micro-step bookkeeping; no weight moves before the boundary
        with timer.phase("optimizer"):
            shared = self._exchange(losses, tokens, samples)  # the step's one host sync
            self._stop_if_not_finite(shared, step)
            max_norm = self.optim.grad_clip if self.optim.grad_clip > 0 else math.inf
            grad_norm = state.clip_grad_norm(max_norm)  # global: dense + every expert
            if not math.isfinite(grad_norm):
                raise NonFiniteError(
                    f"non-finite gradient norm at step {step + 1}: {grad_norm} (all ranks' gradients "
                    "combined); stopping all ranks before the optimizer step"
                )
            state.step()
        return StepStats(
            loss=float(shared[:, :accum].mean()),
            aux_loss=float(shared[:, accum : 2 * accum].mean()),
            cited_event_loss=float(shared[:, 2 * accum : 3 * accum].mean()),
            grad_norm=grad_norm,
            lr=lr,
            tokens=int(shared[:, -2].sum()),
            samples=int(shared[:, -1].sum()),
            seconds=time.perf_counter() - t0,
            data_wait=wait,
            own_tokens=tokens,
            own_samples=samples,
            expert_load=expert_load,
        )

    def _exchange(self, losses: torch.Tensor, tokens: int, samples: int) -> torch.Tensor:
        """[world, len(LOSSES) * accum + 2] on the host: every rank's losses (each kind's accum
        micro-batches together, in LOSSES order), tokens, samples."""
        n = losses.numel()
        t = torch.zeros(self.world, n + 2, dtype=torch.float64, device=self.device)
        t[self.rank, :n] = losses.t().reshape(-1)
        t[self.rank, -2] = tokens
        t[self.rank, -1] = samples
        if self.world > 1:
            dist.all_reduce(t)
        return t.cpu()

    def _stop_if_not_finite(self, shared: torch.Tensor, step: int) -> None:
        accum = self.optim.grad_accum
        bad = (~torch.isfinite(shared[:, :accum])).nonzero()
        if len(bad):
            rank, micro = int(bad[0, 0]), int(bad[0, 1])
            raise NonFiniteError(
                f"non-finite loss at step {step + 1} on rank {rank}: {float(shared[rank, micro])} "
                f"(micro-batch {micro}); stopping all {self.world} ranks before the optimizer step"
            )


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
