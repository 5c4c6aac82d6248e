"""`seller-dist train`'s config: the run, the optimizer, checkpoints, validation, logging, callbacks and
the DeepSpeed strategy keys (docs/training.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from seller_dist.config.model import ModelConfig
from seller_dist.config.storage import StorageConfig
from seller_dist.config.stream import StreamConfig
from seller_dist.config.workers import WorkersConfig
from seller_dist.errors import ConfigError
from seller_dist.strategy_settings import LLMLayout, StrategySettings


@dataclass
class OptimConfig:
    """AdamW for every trainable part (dense modules and experts), warmup + decay schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8  # AdamW's epsilon (a larger one damps the sign-like first steps of tiny gradients)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global L2 norm over dense + expert gradients; 0 = no clipping
    grad_accum: int = 1  # micro-batches per optimizer step

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.eps <= 0:
            raise ConfigError(f"optim.eps must be > 0, got {self.eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.grad_accum < 1:
            raise ConfigError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")


@dataclass
class CheckpointConfig:
    """Where and how often trainable state is checkpointed (docs/checkpoints.md)."""

    every_steps: int = 50  # 0 = only at the end
    keep: int = 3  # newest committed checkpoints kept; older ones are pruned
    at_end: bool = True
    # also keep the committed checkpoint with the lowest validation loss (needs eval.every_steps)
    keep_best: bool = False

    def validate(self) -> None:
        if self.every_steps < 0:
            raise ConfigError(
                f"checkpoint.every_steps must be >= 0 (0 = only at the end), got {self.every_steps}"
            )
        if self.keep < 1:
            raise ConfigError(f"checkpoint.keep must be >= 1, got {self.keep}")


@dataclass
class LoggingConfig:
    """stdout + wandb + Ray reports. MFU is measured against `peak_tflops` per worker device."""

    every_steps: int = 10
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "seller-dist"
    wandb_dir: str = "outputs/wandb"
    peak_tflops: float = 989.0  # dense bf16 peak per device (H100 SXM); set your chip's number

    def validate(self) -> None:
        if self.every_steps < 1:
            raise ConfigError(f"logging.every_steps must be >= 1, got {self.every_steps}")
        if self.peak_tflops <= 0:
            raise ConfigError(f"logging.peak_tflops must be > 0, got {self.peak_tflops}")


@dataclass
class TrainEvalConfig:
    """Validation loss during training (seller_dist.train.validation): the same at any worker count."""

    every_steps: int = 0  # 0 = off; also measured at every checkpoint while on
    split: str = "valid"
    max_examples: int = 512  # the split's first N examples in shard order; 0 = all of them
    batch_size: int = 0  # 0 = data.batch_size

    def validate(self) -> None:
        if self.every_steps < 0:
            raise ConfigError(f"eval.every_steps must be >= 0 (0 = no validation), got {self.every_steps}")
        if self.max_examples < 0:
            raise ConfigError(
                f"eval.max_examples must be >= 0 (0 = the whole split), got {self.max_examples}"
            )
        if self.batch_size < 0:
            raise ConfigError(f"eval.batch_size must be >= 0 (0 = data.batch_size), got {self.batch_size}")


CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # "package.module:Class"


@dataclass
class CallbackConfig:
    """One trainer callback (seller_dist.train.callbacks): each rank builds `Class(**init_args)`."""

    class_path: str  # "package.module:Class", importable in the driver and on every worker
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """`seller-dist train`: one run = run_name under storage_path (checkpoints, metrics)."""

    run_name: str = "seller"
    storage_path: str = "outputs/runs"  # local path or s3://bucket/prefix (endpoint: storage.endpoint_url)
    # warm start: a committed checkpoint (…/step-N), a run's checkpoints folder (its newest) or an
    # export folder whose trainable weights a NEW run starts from (item rows mapped by item id);
    # a run_name that already has a committed checkpoint resumes from it and ignores this
    init_from: str | None = None
    max_steps: int = 100  # optimizer steps; every rank runs exactly this many
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    zero_offload_params: bool = False
    # zero3: the frozen LLM partitioned over all ranks (fits any size); node: partitioned inside each
    # node (llm_shard_size ranks), replicated across nodes: gathers never cross the NICs; hpz: ZeRO++
    # primary partition over all ranks + a node-local secondary copy; replicated: a whole bf16 copy
    # on every GPU, outside the ZeRO-3 engine (no gathers; needs N_llm * 2 bytes per GPU free)
    llm_layout: LLMLayout = "zero3"
    # ranks per node for llm_layout node/hpz; 0: LOCAL_WORLD_SIZE on the workers (GPUs per node)
    llm_shard_size: int = 0
    compile_llm: bool = False  # torch.compile each frozen decoder layer (needs llm_layout=replicated)
    # DeepSpeed DeepCompile of the ZeRO-3 engine (GPU, llm_layout=zero3); unmeasured
    deepcompile: bool = False
    # DeepSpeed settings over the ds_configs file, dotted keys, e.g.
    # {"zero_optimization.stage3_prefetch_bucket_size": 50000000}; keys the train config owns are refused
    deepspeed: dict[str, Any] = field(default_factory=dict)
    # hooks into every rank's loop (seller_dist.train.callbacks.TrainerCallback subclasses), in order
    callbacks: list[CallbackConfig] = field(default_factory=list)
    data: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name: '{self.run_name}' must be a non-empty name without '/'")
        if not self.storage_path:
            raise ConfigError("storage_path: give a local path or an s3:// URL for checkpoints")
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.init_from is not None and not self.init_from.strip():
            raise ConfigError(
                "init_from is empty: give a checkpoint or export URL to warm-start from, or leave it unset"
            )
        if self.precision == "bf16" and not self.workers.use_gpu:
            raise ConfigError("precision=bf16 needs workers.use_gpu=true (CPU runs train in fp32): use auto")
        ep, n = self.model.ep_size, self.workers.num_workers
        if n % ep:
            raise ConfigError(
                f"model.ep_size={ep} does not divide workers.num_workers={n}: choose ep_size in "
                f"{[d for d in range(1, n + 1) if n % d == 0 and self.model.num_experts % d == 0]} "
                "or change workers.num_workers to a multiple of ep_size"
            )
        if self.model.adapter == "none":
            raise ConfigError("model.adapter=none has nothing to train: evaluate it with `seller-dist eval`")
        if self.compile_llm and self.llm_layout != "replicated":
            raise ConfigError(
                "compile_llm=true needs llm_layout=replicated: under ZeRO-3, torch.compile traces the "
                "parameter gather hooks and ran 10x slower than eager (BENCHMARKS.md, GPU run 2)"
            )
        if self.zero_offload_params and self.llm_layout == "replicated":
            raise ConfigError(
                "zero_offload_params=true offloads ZeRO-3 partitions, but llm_layout=replicated keeps "
                "the frozen LLM out of ZeRO-3: use llm_layout=zero3 to offload it"
            )
        for i, cb in enumerate(self.callbacks):
            if not CLASS_PATH.fullmatch(cb.class_path):
                raise ConfigError(
                    f"callbacks[{i}].class_path: '{cb.class_path}' is not 'package.module:Class'"
                )
        # the strategy's own rules (llm_layout, llm_shard_size, deepcompile, the `deepspeed` keys) live
        # in StrategySettings. The ranks per node (llm_shard_size 0) are known on the workers only
        # (LOCAL_WORLD_SIZE), so this check takes the job as one node: it checks a given llm_shard_size

        n = self.workers.num_workers
        StrategySettings.from_train_config(self, self.workers.use_gpu, world_size=n, ranks_per_node=n)
        if self.zero_offload_params and self.llm_layout in ("node", "hpz"):
            raise ConfigError(
                f"zero_offload_params=true is only supported with llm_layout=zero3, not {self.llm_layout}"
            )
        if self.checkpoint.keep_best and not self.eval.every_steps:
            raise ConfigError(
                "checkpoint.keep_best=true needs a validation loss: set eval.every_steps (e.g. to "
                "checkpoint.every_steps)"
            )
