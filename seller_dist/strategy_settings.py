"""The training strategy's settings: one typed, frozen record, validated once when it is made, from
which the DeepSpeed config is built (OpenRLHF's strategy attributes + `get_train_ds_config`).
`StrategySettings.from_train_config` maps a TrainConfig onto it and `DeepSpeedStrategy(settings)`
(seller_dist/train/strategy.py) runs it. The train config validates through this module on the
driver, so it imports no torch at module level and nothing back from seller_dist.config (`cfg: Any`).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from seller_dist.errors import ConfigError

LLMLayout = Literal["zero3", "replicated", "node", "hpz"]  # where the frozen LLM lives (docs/training.md)
LLM_LAYOUTS: tuple[str, ...] = get_args(LLMLayout)
DS_CONFIG_DIR = Path(__file__).resolve().parent / "train" / "ds_configs"  # package data (pyproject.toml)
NODE_LAYOUTS = ("node", "hpz")  # the layouts that shard the frozen LLM over groups of llm_shard_size ranks
# DeepSpeed keys the settings set, with the train config key that sets them: `deepspeed` overrides
# of these (or of anything under them) are refused
OWNED_KEYS = {
    "train_micro_batch_size_per_gpu": "data.batch_size",
    "gradient_accumulation_steps": "optim.grad_accum",
    "gradient_clipping": "optim.grad_clip",
    "bf16": "precision",
    "fp16": "precision",
    "zero_optimization.stage": "llm_layout",
    "compile": "deepcompile",
}


def dotted_items(tree: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2}: nested and dotted keys alike (the YAML of
    an experiment or a DeepSpeed dict may nest or dot its keys; a `--set a.b.c=v` nests them)."""
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            out.update(dotted_items(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def ds_config_file(name: str) -> dict[str, Any]:
    """A fresh copy of seller_dist/train/ds_configs/<name> (zero3_cpu.json, zero3_gpu.json, zero3_offload.json)."""
    return json.loads((DS_CONFIG_DIR / name).read_text())


def on_gpu() -> bool:
    """CUDA is available and DeepSpeed is not told to use the CPU (DS_ACCELERATOR=cpu)."""
    import torch

    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"


def gpus_per_node(default: int) -> int:
    """Ranks on this node: LOCAL_WORLD_SIZE (torchrun and Ray Train set it), else the visible GPUs,
    else `default`."""
    env = os.environ.get("LOCAL_WORLD_SIZE")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    if on_gpu():
        import torch

        return torch.cuda.device_count()
    return default


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class StrategySettings:
    """What the strategy needs to know, checked in `__post_init__` (each refusal one ConfigError line).
    `use_gpu` defaults to what this process sees, `world_size` to WORLD_SIZE; `llm_shard_size` (node
    and hpz only) is given or, at 0, resolved to `ranks_per_node` (default: LOCAL_WORLD_SIZE, else the
    visible GPUs, else the world). `offload_params`: the offload file on GPU, unpinned CPU partitions
    on CPU; `persistence_threshold`: the file's unless given; `deepspeed`: the user's settings over
    the file, nested or dotted keys, none of OWNED_KEYS."""

    micro_batch_size: int
    grad_accum: int = 1
    bf16: bool = False
    offload_params: bool = False
    persistence_threshold: int | None = None  # tests use 0: every parameter partitioned
    use_gpu: bool = field(default_factory=on_gpu)
    llm_layout: LLMLayout = "zero3"
    llm_shard_size: int = 0
    world_size: int = field(default_factory=_env_world_size)
    deepcompile: bool = False
    deepspeed: dict[str, Any] = field(default_factory=dict)
    ranks_per_node: int | None = None

    def __post_init__(self) -> None:
        layout, shard, world = self.llm_layout, self.llm_shard_size, self.world_size
        if layout not in LLM_LAYOUTS:
            raise ConfigError(f"llm_layout: {layout!r} is not one of {list(LLM_LAYOUTS)}")
        if shard < 0:
            raise ConfigError(f"llm_shard_size must be >= 0 (0: GPUs per node), got {shard}")
        if shard and layout not in NODE_LAYOUTS:
            raise ConfigError(f"llm_shard_size={shard} only applies to llm_layout node or hpz, not {layout}")
        if shard and world % shard:
            raise ConfigError(
                f"llm_shard_size={shard} does not divide workers.num_workers={world}: set it to the GPUs per node"
            )
        if layout in NODE_LAYOUTS and not shard:
            size = self.ranks_per_node or gpus_per_node(world)
            if size < 1 or world % size:
                raise ConfigError(
                    f"llm_shard_size={size} does not divide the {world} workers: set train.llm_shard_size to "
                    "the GPUs per node (every node must run the same number of workers)"
                )
            object.__setattr__(self, "llm_shard_size", size)
        if self.deepcompile:
            if layout != "zero3":
                raise ConfigError(
                    f"deepcompile=true needs llm_layout=zero3 (got {layout}): DeepCompile compiles the "
                    "ZeRO-3 gathers; for replicated use compile_llm=true"
                )
            if not self.use_gpu:
                raise ConfigError("deepcompile=true needs workers.use_gpu=true: DeepCompile is CUDA-only")
        overrides = dotted_items(self.deepspeed)
        for key in overrides:
            root = next((k for k in OWNED_KEYS if key == k or key.startswith(k + ".")), None)
            if root is not None:
                raise ConfigError(
                    f"deepspeed.{key} is set by the train config: use {OWNED_KEYS[root]} instead"
                )
        object.__setattr__(self, "deepspeed", overrides)

    @classmethod
    def from_train_config(
        cls, cfg: Any, use_gpu: bool, world_size: int | None = None, ranks_per_node: int | None = None
    ) -> StrategySettings:
        """A training run's settings: micro batch = data.batch_size, accumulation = optim.grad_accum,
        bf16 per `precision` (auto: on GPU), `zero_offload_params` on GPU only, the layout, DeepCompile
        and `deepspeed` settings as given; `world_size` defaults to WORLD_SIZE, else workers.num_workers."""
        if world_size is None:
            world_size = int(os.environ.get("WORLD_SIZE", cfg.workers.num_workers))
        return cls(
            micro_batch_size=cfg.data.batch_size,
            grad_accum=cfg.optim.grad_accum,
            bf16=cfg.precision == "bf16" or (cfg.precision == "auto" and use_gpu),
            offload_params=cfg.zero_offload_params and use_gpu,
            use_gpu=use_gpu,
            llm_layout=cfg.llm_layout,
            llm_shard_size=cfg.llm_shard_size,
            world_size=world_size,
            deepcompile=cfg.deepcompile,
            deepspeed=cfg.deepspeed,
            ranks_per_node=ranks_per_node,
        )

    def deepspeed_config(self) -> dict[str, Any]:
        """A fresh DeepSpeed config for a client torch optimizer: the ds_configs/ file for the device
        (zero3_gpu.json, zero3_offload.json with `offload_params` on GPU, zero3_cpu.json) with its
        "auto"s filled, ZeRO++'s `zero_hpz_partition_size` under hpz, `"compile": {"deepcompile":
        true}` with `deepcompile`, then the `deepspeed` settings. DeepSpeed's gradient clipping is off
        (its default clips the engine's gradients alone at 1.0, missing the MoE's): clip both with
        `TrainState.clip_grad_norm`."""
        if self.offload_params and self.use_gpu:
            ds = ds_config_file("zero3_offload.json")
        else:
            ds = ds_config_file("zero3_gpu.json" if self.use_gpu else "zero3_cpu.json")
            if self.offload_params:  # CPU ranks: the CPU file, partitions kept in (unpinned) CPU memory
                ds["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": False}
        zero = ds["zero_optimization"]
        if self.persistence_threshold is not None:
            zero["stage3_param_persistence_threshold"] = self.persistence_threshold
        ds["train_micro_batch_size_per_gpu"] = self.micro_batch_size
        ds["gradient_accumulation_steps"] = self.grad_accum
        ds["gradient_clipping"] = 0.0  # clipped by hand: dense + expert gradients together
        ds["bf16"] = {"enabled": self.bf16}
        ds.pop("fp16", None)
        if self.llm_layout == "hpz" and 1 < self.llm_shard_size < self.world_size:
            zero["zero_hpz_partition_size"] = self.llm_shard_size
        if self.deepcompile:
            ds["compile"] = {"deepcompile": True}
        for key, value in self.deepspeed.items():
            node = ds
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = copy.deepcopy(value)
        return ds
