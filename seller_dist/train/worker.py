"""The per-worker training loop: one function, `train_worker`, shows a whole training step.

Every rank runs the same code (Ray Train calls `ray_train_loop`; tests call `train_worker` in spawned
processes). Per rank: build this rank's stream (RankLoader + SellerCollator), the frozen LLM
partitioned by ZeRO-3 while it loads, the SellerModel and its two optimizers (DeepSpeed engine for
the dense trainables, a torch AdamW for this rank's experts), then run exactly `max_steps`
optimizer steps of `optim.grad_accum` micro-batches each.

Why the step looks the way it does:
- Determinism across a restart: dropout and routing noise are seeded per (seed, step, micro-batch,
  rank), the LR is a pure function of the step, and the data cursor is exact, so a run resumed
  from a checkpoint continues with the very numbers an uninterrupted run would have used.
- Non-finite values: every rank's loss is shared (one all-reduce of a [world] vector) BEFORE
  backward, and the gradient norm is global, so all ranks see the same NaN and raise the same
  error at the same point; none is left waiting in a collective.
- Stream pad rows (a rank's range topped up to equal length) get labels -100, so they add nothing to
  the language-model loss; they still pass through the router, so the MoE aux loss and expert load
  include them (at most world_size - 1 rows per epoch).
- Checkpoints (seller_dist.train.checkpoint) never hold the frozen LLM: the engine is saved with
  DeepSpeed's `save_checkpoint(exclude_frozen_parameters=True)` into the writer's staging folder,
  the experts and their optimizer as safetensors, the data cursor as JSON. Resume looks up the
  newest COMMITTED checkpoint itself (not Ray's checkpoint bookkeeping), so a restarted driver with
  the same run name continues exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from seller_dist import storage
from seller_dist.config import OptimConfig, TrainConfig
from seller_dist.config_loader import dump_yaml, from_dict, to_dict
from seller_dist.train import checkpoint as ck
from seller_dist.train import warm_start

log = logging.getLogger(__name__)

DS_CONFIG_DIR = Path(__file__).resolve().parents[2] / "ds_configs"
ENGINE_DIR = "engine"  # DeepSpeed save_checkpoint output inside a checkpoint (tag folder)
PID_DIR_ENV = "SELLER_DIST_PID_DIR"  # test hook: each rank writes rank-<r>.pid there (fault tests)


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


def ds_config_for(cfg: TrainConfig, use_gpu: bool) -> dict[str, Any]:
    """The ds_configs/ file for this run with every "auto" filled from the train config."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and use_gpu)
    name = (
        "zero3_cpu.json"
        if not use_gpu
        else ("zero3_offload.json" if cfg.zero_offload_params else "zero3_gpu.json")
    )
    path = DS_CONFIG_DIR / name
    if path.is_file():
        ds = json.loads(path.read_text())
    else:  # an installed package without the repo's ds_configs/: the strategy's built-in equivalent
        from seller_dist.train.strategy import zero3_config

        ds = zero3_config(1, offload_params=cfg.zero_offload_params)
    ds["train_micro_batch_size_per_gpu"] = cfg.data.batch_size
    ds["gradient_accumulation_steps"] = cfg.optim.grad_accum
    ds["gradient_clipping"] = 0.0  # clipped by hand: dense + expert gradients together
    ds["bf16"] = {"enabled": bf16}
    ds.pop("fp16", None)
    return ds


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + micro * 104_729 + rank * 15_485_863) % (2**63 - 1)


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors only, on the device; stream pad rows get no language-model loss (labels -100)."""
    out = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v) and k != "pad"}
    pad = batch["pad"].to(device)
    if bool(pad.any()):
        out["labels"] = out["labels"].masked_fill(pad[:, None], -100)
    return out


def share(values: list[float], rank: int, world: int, device: torch.device) -> torch.Tensor:
    """[world, len(values)]: every rank's values on every rank (a NaN stays in its own row)."""
    t = torch.zeros(world, len(values), dtype=torch.float64, device=device)
    t[rank] = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.cpu()


def first_bad_rank(values: torch.Tensor) -> int | None:
    bad = (~torch.isfinite(values)).nonzero()
    return int(bad[0, 0]) if len(bad) else None


# -------------------------------------------------------------------------------- checkpointing
def save_checkpoint(
    state: Any,
    loader: Any,
    cfg: TrainConfig,
    step: int,
    rank: int,
    world: int,
    extra: dict[str, Any],
    dataset: dict[str, Any] | None = None,
) -> str:
    """Every rank: stage its part, upload, barrier; rank 0 commits (COMMITTED last) and prunes.
    `dataset`: checkpoint.dataset_record(...) for dataset.json (rank 0), what warm starts map rows by."""
    root = ck.checkpoints_root(cfg.storage_path, cfg.run_name)
    writer = ck.CheckpointWriter(root, step, rank, world, cfg.storage)
    try:
        # DeepSpeed engine: this rank's ZeRO-3 partitions of the dense trainables + their AdamW
        # state; frozen LLM excluded. Collective: every rank calls it.
        state.engine.save_checkpoint(
            str(writer.staging_dir), tag=ENGINE_DIR, exclude_frozen_parameters=True, save_latest=False
        )
        dense = state.trainable_state_dict()  # collective gather; full weights for export
        if rank == 0:
            writer.save_tensors(ck.DENSE_FILE, {k: v for k, v in dense.items() if not k.startswith("moe.")})
            writer.save_json(ck.TRAIN_STATE_FILE, {"step": step, **extra})
            writer.save_text(ck.CONFIG_FILE, dump_yaml(cfg))
            writer.save_json(ck.MODEL_META_FILE, ck.model_meta(cfg.model, state.model.vocab))
            writer.save_text(ck.MANIFEST_HASH_FILE, extra["manifest_sha256"] + "\n")
            if dataset is not None:
                writer.save_json(ck.DATASET_FILE, dataset)
        if state.moe is not None:
            if rank == state.groups.ep_rank:  # the first holder of these experts writes them
                writer.save_tensors(ck.moe_file(state.groups.ep_rank), state.moe.state_dict())
            writer.save_state(f"moe-optim-rank-{rank}", state.moe_optimizer.state_dict())
        writer.save_json(ck.data_state_file(rank), loader.state_dict())
        writer.upload()
    finally:
        writer.cleanup()
    if world > 1:
        dist.barrier()
    if rank == 0:
        ck.commit(writer.url, world, cfg.storage)
        ck.prune(root, cfg.checkpoint.keep, cfg.storage)
    if world > 1:
        dist.barrier()  # nobody moves on (or exits) before the commit is visible
    return writer.url


def restore_checkpoint(ckpt: ck.Checkpoint, state: Any, loader: Any, rank: int, world: int) -> dict[str, Any]:
    """Weights, both optimizers and this rank's data cursor from a committed checkpoint.

    The engine part is loaded by DeepSpeed (`torch.load` of its .pt files): acceptable only because
    `Checkpoint.download` verifies each file against the sha256 in COMMITTED before it is written
    locally, so nothing but what this job itself saved is ever unpickled."""
    if ckpt.world_size != world:
        raise ck.CheckpointError(
            f"checkpoint {ckpt.url} was written by {ckpt.world_size} workers, this run has {world}: "
            "resume with the same workers.num_workers, or start a new run_name"
        )
    with tempfile.TemporaryDirectory(prefix=f"seller-resume-rank{rank}-") as tmp:
        ckpt.download(tmp, prefix=f"{ENGINE_DIR}/")
        path, _ = state.engine.load_checkpoint(
            tmp,
            tag=ENGINE_DIR,
            load_module_strict=False,  # the frozen LLM was excluded on save
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise ck.CheckpointError(f"checkpoint {ckpt.url}: DeepSpeed could not load {ENGINE_DIR}/")
    if state.moe is not None:
        state.moe.load_state_dict(ckpt.load_tensors(ck.moe_file(state.groups.ep_rank)))
        state.moe_optimizer.load_state_dict(ckpt.load_state(f"moe-optim-rank-{rank}"))
    loader.load_state_dict(ckpt.load_json(ck.data_state_file(rank)))
    return ckpt.load_json(ck.TRAIN_STATE_FILE)


# ------------------------------------------------------------------------------------ the loop
def rank_loader(cfg: TrainConfig, rank: int, world: int) -> tuple[Any, Any]:
    """(manifest, RankLoader): this rank's exact share of the split, collated with the LLM's tokenizer."""
    manifest, _, loader = rank_data(cfg, rank, world)
    return manifest, loader


def rank_data(cfg: TrainConfig, rank: int, world: int) -> tuple[Any, Any, Any]:
    """(manifest, ItemCatalog, RankLoader); the catalog says which item id each item_idx is."""
    from seller_dist.data.catalog import ItemCatalog
    from seller_dist.data.collate import SellerCollator
    from seller_dist.data.shards import Manifest
    from seller_dist.data.stream import RankLoader
    from seller_dist.model.llm_source import load_tokenizer_files, resolve_llm_path

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
    )
    return manifest, catalog, RankLoader.from_config(cfg.data, rank, world, collate_fn=collate)


def train_worker(
    cfg: TrainConfig,
    report: Callable[[dict[str, Any]], None] | None = None,
    poison: tuple[int, int] | None = None,
    keep_trainable: bool = False,
    timer: Any = None,
) -> WorkerResult:
    """Train this rank (torch.distributed env vars or an initialized process group expected).

    `poison=(rank, step)`: a test hook that puts NaN into that rank's batch at that step (1-based).
    `keep_trainable`: also return the full trainable weights (tests compare runs with them).
    `timer`: a seller_dist.train.metrics.StepTimer to split each step's time into phases
    (`seller-dist bench train`); the default measures nothing and changes nothing.
    """
    use_gpu = setup_rank_env()
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.vocab import ModelVocab
    from seller_dist.train.metrics import MetricsLogger, NullStepTimer, ThroughputMeter
    from seller_dist.train.strategy import DeepSpeedStrategy

    cfg.validate()
    strategy = DeepSpeedStrategy(ds_config_for(cfg, use_gpu), cfg.llm_layout)
    strategy.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
    if os.environ.get(PID_DIR_ENV):
        Path(os.environ[PID_DIR_ENV], f"rank-{rank}.pid").write_text(str(os.getpid()))

    # ---- data: this rank's exact share of the split, collated with the LLM's tokenizer
    manifest, catalog, loader = rank_data(cfg, rank, world)
    manifest_sha256 = hashlib.sha256(
        storage.read_bytes(storage.join(cfg.data.manifest, "manifest.json"), cfg.data.storage)
    ).hexdigest()

    item_ids = catalog.item_ids[1:]  # item_ids[i - 1] is item_idx i
    dataset = ck.dataset_record(cfg.data.manifest, manifest_sha256, manifest.data, item_ids)

    # ---- model: LLM partitioned while loading; identical trainable init on every rank
    llm = strategy.load_llm(cfg.model, cfg.storage)  # same cached download as the collate's tokenizer
    if cfg.compile_llm:
        llm.compile_layers()
    collate = loader.stream.collate_fn
    longest = collate.max_prompt_tokens + collate.max_target_tokens + 1  # + eos
    window = llm.family.window_warning(longest) if llm.family else None
    if rank == 0:
        print(f"[train] {llm.family.summary() if llm.family else 'LLM loaded'}", flush=True)
        if window:
            print(f"[train] warning: {window}", flush=True)
    # the newest committed checkpoint of this run wins over init_from (a restarted run resumes)
    root = ck.checkpoints_root(cfg.storage_path, cfg.run_name)
    latest = ck.latest_committed(root, cfg.storage, verify=True)
    warm = None
    if latest is None and cfg.init_from:
        warm = warm_start.for_worker(cfg, manifest.data, manifest_sha256, item_ids, llm.hidden_size)
    torch.manual_seed(cfg.seed)
    model = SellerModel(cfg.model, ModelVocab.from_manifest(manifest.data), llm, strategy.registers_llm)
    if warm is not None:  # before DeepSpeed partitions the dense trainables: every rank copies the same
        warm_start.load_dense(model, warm)
    o = cfg.optim
    state = strategy.prepare(model, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps)
    optimizers = [state.engine.optimizer] + ([state.moe_optimizer] if state.moe_optimizer else [])
    if warm is not None:
        warm_start.load_moe(state.moe, warm)
        if rank == 0:
            print(f"[train] {warm.summary()}", flush=True)

    # ---- resume from the newest committed checkpoint of this run, if any
    start_step, ckpt_url = 0, None
    init_record = warm.record() if warm is not None else None
    if latest is not None:
        restored = restore_checkpoint(latest, state, loader, rank, world)
        start_step, init_record = int(restored["step"]), restored.get("init_from")
        ckpt_url = latest.url
        if rank == 0:
            print(f"[train] rank 0 resumed from {latest.url} at step {start_step}", flush=True)
    result = WorkerResult(start_step=start_step, step=start_step, checkpoint_url=ckpt_url)

    frozen_n = sum(getattr(p, "ds_numel", p.numel()) for p in llm.parameters())
    trainable_n = sum(getattr(p, "ds_numel", p.numel()) for _, p in model.trainable_named_parameters())
    if state.moe is not None:
        trainable_n += sum(p.numel() for p in state.moe.parameters()) * cfg.model.ep_size
    timer = timer if timer is not None else NullStepTimer()
    timer.set_model_size(frozen_n, trainable_n)
    meter = ThroughputMeter(frozen_n, trainable_n, cfg.logging.peak_tflops, num_devices=world)
    logger = MetricsLogger(cfg.logging, cfg.run_name, to_dict(cfg), rank, report)
    extra: dict[str, Any] = {"manifest_sha256": manifest_sha256, "seed": cfg.seed, "world_size": world}
    if init_record is not None:
        extra["init_from"] = init_record  # where this run's weights started (kept across resumes)
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    window: dict[str, list[float]] = {"loss": [], "aux_loss": [], "grad_norm": []}
    expert_load = None
    batches = iter(loader)
    state.engine.train()
    if state.moe is not None:
        state.moe.train()
    try:
        for step in range(start_step, cfg.max_steps):
            timer.step_begin()
            t0 = time.perf_counter()
            lr = lr_at(step, cfg.optim, cfg.max_steps)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
            wait = 0.0
            tokens = samples = 0
            step_losses = []
            for micro in range(cfg.optim.grad_accum):
                tw = time.perf_counter()
                with timer.phase("data_wait"):
                    batch = next(batches)
                wait += time.perf_counter() - tw
                inputs = model_inputs(batch, device)
                if poison == (rank, step + 1):
                    inputs["hist_rating"] = torch.full_like(inputs["hist_rating"], float("nan"))
                real = ~batch["pad"]
                tokens += int(batch["attention_mask"][real].sum())
                samples += int(real.sum())
                torch.manual_seed(step_seed(cfg.seed, step, micro, rank))
                with timer.phase("forward"):
                    out = state.forward(inputs)
                    # every rank's loss on every rank, before backward: all stop together on a NaN
                    losses = share([float(out["loss"].detach()), float(out["aux_loss"])], rank, world, device)
                bad = first_bad_rank(losses[:, :1])
                if bad is not None:
                    raise NonFiniteError(
                        f"non-finite loss at step {step + 1} on rank {bad}: {float(losses[bad, 0])} "
                        f"(micro-batch {micro}); stopping all {world} ranks"
                    )
                step_losses.append(losses.mean(0))
                with timer.phase("backward"):
                    state.backward(out["loss"])
                load = out["expert_load"].float()
                expert_load = load if expert_load is None else expert_load + load
                with timer.phase("optimizer"):
                    if micro == cfg.optim.grad_accum - 1:  # accumulation boundary
                        grad_norm = state.clip_grad_norm(max_norm)  # global: dense + every expert
                        if not math.isfinite(grad_norm):
                            raise NonFiniteError(
                                f"non-finite gradient norm at step {step + 1}: {grad_norm} (all ranks' "
                                "gradients combined); stopping all ranks before the optimizer step"
                            )
                    state.step()
            mean = torch.stack(step_losses).mean(0)
            result.losses[step + 1] = float(mean[0])
            result.step = step + 1
            window["loss"].append(float(mean[0]))
            window["aux_loss"].append(float(mean[1]))
            window["grad_norm"].append(grad_norm)
            counts = torch.tensor([tokens, samples], dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(counts)
            meter.update(int(counts[0]), int(counts[1]), time.perf_counter() - t0, wait)

            done = step + 1
            if done % cfg.logging.every_steps == 0 or done == cfg.max_steps:
                load = expert_load if expert_load is not None else torch.zeros(0)
                if world > 1 and load.numel():
                    load = load.to(device)
                    dist.all_reduce(load)
                load = load / max(1e-12, float(load.sum())) if load.numel() else load
                metrics = {
                    "loss": sum(window["loss"]) / len(window["loss"]),
                    "aux_loss": sum(window["aux_loss"]) / len(window["aux_loss"]),
                    "grad_norm": sum(window["grad_norm"]) / len(window["grad_norm"]),
                    "lr": lr,
                    "epoch": loader.epoch,
                    "expert_load": [float(x) for x in load.cpu()],
                    **meter.summary(),
                }
                logger.log(done, metrics)
                window = {k: [] for k in window}
                expert_load = None
            every = cfg.checkpoint.every_steps
            if (every and done % every == 0) or (done == cfg.max_steps and cfg.checkpoint.at_end):
                result.checkpoint_url = save_checkpoint(
                    state, loader, cfg, done, rank, world, {**extra, "lr": lr}, dataset
                )
            timer.step_end(tokens, samples)  # this rank's own counts
        if keep_trainable:
            result.trainable = {k: v.cpu() for k, v in state.trainable_state_dict().items()}
    finally:
        logger.close()
    return result


def ray_train_loop(loop_config: dict[str, Any]) -> None:
    """The `train_loop_per_worker` of the TorchTrainer (seller_dist.train.driver)."""
    import ray.train

    cfg = from_dict(TrainConfig, loop_config["config"])
    result = train_worker(cfg, report=ray.train.report)
    ray.train.report(
        {"step": result.step, "done": True, "checkpoint_url": result.checkpoint_url or "", "final": True}
    )
