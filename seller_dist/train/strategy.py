"""The training strategies: how the SellerModel, its MoE and their optimizers are laid out, and the
backward/step over them. `DeepSpeedStrategy` is the job's and the one place that talks to DeepSpeed (the LLM
loaded per `llm_layout`, the ZeRO-3 engine, the expert-parallel MoE kept outside it); `TorchStrategy` is plain
PyTorch in one process, the floor `seller-dist bench` measures against. Both prepare a `StrategyState` that
TrainStep drives (docs/model.md, "DeepSpeed (train/strategy.py)"; layouts: docs/training.md).
"""

from __future__ import annotations

import math
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from seller_dist.config import ModelConfig, OptimConfig, StorageConfig
from seller_dist.model.expert_parallel import ExpertParallelGroups, expert_grad_norm_sq, reduce_moe_gradients
from seller_dist.model.llm import FrozenLLM
from seller_dist.model.moe import MoEAdapter
from seller_dist.model.seller import SellerModel
from seller_dist.strategy_settings import StrategySettings, on_gpu


def load_frozen_llm(
    cfg: ModelConfig, dtype: torch.dtype, storage_cfg: StorageConfig | None = None
) -> FrozenLLM:
    """The frozen LLM of `cfg`: bf16 when the strategy trains in bf16, else the config's llm_dtype."""
    return FrozenLLM.from_pretrained(
        cfg.llm_path,
        "bfloat16" if dtype == torch.bfloat16 else cfg.llm_dtype,
        cfg.llm_cache_dir,
        storage_cfg,
        cfg.trust_remote_code,
        cfg.allow_pickle_weights,
    )


def dense_trainables(model: SellerModel) -> list[torch.nn.Parameter]:
    """The model's trainable parameters outside the MoE; none (adapter=none) is refused."""
    params = [p for _, p in model.trainable_named_parameters()]
    if not params:
        raise ValueError(
            "model.adapter=none has no trainable parameters: evaluate it directly instead of training"
        )
    return params


def node_groups(shard_size: int) -> Any:
    """This rank's group of the partition of all ranks into consecutive blocks of `shard_size` (one
    node each, the order torchrun and Ray Train give ranks). Collective: every rank creates every group."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    mine = None
    for start in range(0, world, shard_size):
        g = dist.new_group(list(range(start, start + shard_size)))
        if start <= rank < start + shard_size:
            mine = g
    return mine


def prefer_environment_ninja() -> None:
    """Put this interpreter's bin folder first on PATH when it holds `ninja`: DeepSpeed JIT-builds its
    CPU ops with torch's cpp_extension, which runs the first `ninja` on PATH, and two ninja versions hash
    build commands differently, so processes that found different ones would rebuild the op whenever
    they alternate. Every process of one environment builds with that environment's ninja."""
    bindir = os.path.dirname(sys.executable)
    if not os.path.isfile(os.path.join(bindir, "ninja")):
        return
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, path]) if path else bindir


def reshard_frozen(module: torch.nn.Module, group: Any, ds_config: dict[str, Any]) -> None:
    """Re-partition every ZeRO-3 parameter of `module` (loaded partitioned over all ranks) over
    `group` instead, one submodule at a time: gather its parameters, replace each with a whole plain
    Parameter and let zero.Init partition that over the group. At most one submodule's parameters are
    ever whole on a rank; tied parameters stay tied. DeepSpeed 0.19 gathers each parameter over its
    own `ds_process_group`, so these coexist with the engine's world-partitioned trainables."""
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import is_zero_param

    init = deepspeed.zero.Init(data_parallel_group=group, config_dict_or_path=ds_config)
    done: dict[int, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}  # id(old) -> (old, new)
    for sub in module.modules():
        own = [(n, p) for n, p in sub.named_parameters(recurse=False) if p is not None]
        todo = [p for _, p in own if id(p) not in done and is_zero_param(p)]
        if todo:
            with deepspeed.zero.GatheredParameters(todo):
                whole = {id(p): p.data.detach().clone() for p in todo}
            for p in todo:
                new = torch.nn.Parameter(whole[id(p)], requires_grad=p.requires_grad)
                init._convert_to_zero_parameters([new])
                done[id(p)] = (p, new)  # the old one stays referenced: ids stay unique
        for n, p in own:
            if id(p) in done:
                setattr(sub, n, done[id(p)][1])


class StrategyState(ABC):
    """What a strategy prepares and TrainStep drives: `forward_module` runs the model with this
    rank's MoE beside it (never inside it: seller_dist.model.seller), so the two are called and
    switched between training and evaluation together; `backward`, `step` (every micro-batch;
    the weights move at the accumulation boundary) and `clip_grad_norm` (dense and expert gradients
    together) are the strategy's own."""

    moe: MoEAdapter | None
    grad_accum: int  # micro-batches per optimizer step

    @property
    @abstractmethod
    def forward_module(self) -> torch.nn.Module:
        """The module the forward pass calls: DeepSpeed's engine, or the SellerModel itself."""

    @property
    @abstractmethod
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the step sets the LR of."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> None: ...

    @abstractmethod
    def clip_grad_norm(self, max_norm: float) -> float: ...

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        # No input casting needed: each module casts float inputs to its own weight dtype. Under
        # bf16 the LLM loads in bf16 while the dense trainables (built outside zero.Init) stay fp32
        # and the MoE (outside the engine) stays fp32; soft vectors are cast into the LLM's dtype.
        return self.forward_module(batch, moe=self.moe)

    def train(self, mode: bool = True) -> None:
        """Training mode (dropout, routing noise) or, with False, evaluation mode for the model and MoE."""
        self.forward_module.train(mode)
        if self.moe is not None:
            self.moe.train(mode)


def adamw(params: Any, optim: OptimConfig, fused: bool = False) -> torch.optim.AdamW:
    """The AdamW every trainable part gets (dense modules, experts), from the job's `optim` settings;
    the LR is the schedule's to set each step."""
    return torch.optim.AdamW(
        params,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        betas=tuple(optim.betas),
        eps=optim.eps,
        fused=fused,
    )


@dataclass
class TrainState(StrategyState):
    engine: Any  # deepspeed.DeepSpeedEngine wrapping the SellerModel
    moe: MoEAdapter | None
    moe_optimizer: torch.optim.Optimizer | None
    groups: ExpertParallelGroups
    dtype: torch.dtype

    @property
    def model(self) -> SellerModel:
        return self.engine.module

    @property
    def forward_module(self) -> torch.nn.Module:
        return self.engine

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The engine's (dense trainables) and the experts'."""
        return [self.engine.optimizer] + ([self.moe_optimizer] if self.moe_optimizer is not None else [])

    @property
    def grad_accum(self) -> int:
        """As the engine was configured."""
        return int(self.engine.gradient_accumulation_steps())

    def backward(self, loss: torch.Tensor) -> None:
        """engine.backward (scales by 1/gradient_accumulation_steps, so MoE grads accumulate the
        same mean); the MoE gradient fixups run once, at the accumulation boundary."""
        self.engine.backward(loss)
        if self.moe is not None and self.engine.is_gradient_accumulation_boundary():
            reduce_moe_gradients(self.moe, self.groups)

    def step(self) -> None:
        """Every micro-step, like engine.step(); optimizers only move at the boundary."""
        if self.moe_optimizer is not None and self.engine.is_gradient_accumulation_boundary():
            self.moe_optimizer.step()
            self.moe_optimizer.zero_grad(set_to_none=True)
        self.engine.step()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Full trainable weights on every rank (collective): dense ones gathered from their ZeRO-3
        partitions, all experts gathered over the expert-parallel group (keys "moe.*")."""
        import deepspeed

        named = self.model.trainable_named_parameters()
        with deepspeed.zero.GatheredParameters([p for _, p in named]):
            state = {n: p.detach().clone() for n, p in named}
        if self.moe is not None:
            state.update({f"moe.{k}": v for k, v in self.moe.full_state_dict().items()})
        return state

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip the engine's and the MoE's gradients TOGETHER to `max_norm` (call between backward()
        and step(), at the accumulation boundary); returns the total norm before clipping. The engine
        alone would miss the experts, so its norm and the MoE's (every expert once + router) combine to
        the global norm; the MoE grads are scaled here and the engine's optimizer gets the clip
        threshold that yields the same factor."""
        from deepspeed.runtime.utils import combine_grad_norm_groups

        # DeepSpeed 0.19 ZeRO-3 internals (`_get_norm_groups`, `clip_grad`);
        # tests/integration/test_zero3_model.py pins the behaviour
        opt = self.engine.optimizer
        engine_norm = float(combine_grad_norm_groups(opt._get_norm_groups())) / float(opt.loss_scale)
        moe_sq = float(expert_grad_norm_sq(self.moe, self.groups)) if self.moe is not None else 0.0
        total = math.sqrt(engine_norm**2 + moe_sq)
        coef = max_norm / (total + 1e-6)
        if coef < 1.0:
            if self.moe is not None:
                for p in self.moe.parameters():
                    if p.grad is not None:
                        p.grad.mul_(coef)
            # DeepSpeed divides by max(1, (engine_norm + 1e-6) / clip_grad): make that 1 / coef
            opt.clip_grad = coef * (engine_norm + 1e-6)
        else:
            opt.clip_grad = 0.0
        return total


class DeepSpeedStrategy:
    def __init__(self, settings: StrategySettings):
        """The strategy of `settings` (validated when they were made). `ds_config` is
        `settings.deepspeed_config()`, exactly what DeepSpeed sees. `settings.llm_layout`
        (docs/training.md): "zero3" partitions the frozen LLM over all ranks while it loads; "node" over
        groups of `settings.llm_shard_size` ranks; "hpz" adds ZeRO++'s node-local secondary partition
        (`zero_hpz_partition_size`); "replicated" loads a whole copy on this rank's device and keeps
        it outside the engine (no gathers)."""
        self.settings = settings
        self.ds_config = settings.deepspeed_config()
        self.llm_layout = settings.llm_layout
        self.deepcompile = settings.deepcompile
        self._resharded = False  # the LLM's partition group is the node (load_llm, llm_layout=node)
        self._hf_ds_config = None
        if self.llm_layout != "replicated":
            from transformers.integrations import HfDeepSpeedConfig

            # must stay referenced while models load: from_pretrained then partitions (zero.Init)
            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.settings.bf16 else torch.float32

    @property
    def llm_shard_size(self) -> int:
        """Ranks one copy of the frozen LLM is partitioned over (the world for zero3, 1 for replicated)."""
        import torch.distributed as dist

        if self.llm_layout == "replicated":
            return 1
        if self.llm_layout == "zero3":
            return dist.get_world_size() if dist.is_initialized() else self.settings.world_size
        return self.settings.llm_shard_size

    @staticmethod
    def init_distributed(backend: str | None = None) -> None:
        """gloo on CPU (oneCCL is not installed), nccl on GPUs; reads RANK/WORLD_SIZE/MASTER_* env."""
        prefer_environment_ninja()  # DeepSpeed JIT-builds its CPU comm op in here
        import deepspeed

        if backend is None:
            backend = "nccl" if on_gpu() else "gloo"
        deepspeed.init_distributed(dist_backend=backend)

    def load_llm(self, cfg: ModelConfig, storage_cfg: StorageConfig | None = None) -> FrozenLLM:
        llm = load_frozen_llm(cfg, self.dtype, storage_cfg)
        if self.llm_layout == "node":
            import torch.distributed as dist

            shard = self.llm_shard_size
            if shard < dist.get_world_size():  # one node: the same as zero3
                # loaded partitioned over all ranks (Hugging Face's ZeRO-3 loading lets global rank 0
                # read the weights, so it cannot load into node groups directly): now over the node
                reshard_frozen(llm, node_groups(shard), self.ds_config)
                self._resharded = True
        if self.llm_layout == "replicated" and on_gpu():  # the worker's device (outside the engine)
            llm.to(torch.device("cuda", torch.cuda.current_device()))
        return llm

    @property
    def registers_llm(self) -> bool:
        """Whether the SellerModel should hold the LLM as a submodule (inside the engine)."""
        return self.llm_layout != "replicated"

    def prepare(self, model: SellerModel, optim: OptimConfig) -> TrainState:
        """Engine over the model's dense trainables (client AdamW) + this rank's MoE and its AdamW.
        Call on every rank with identically initialised modules (seed before building)."""
        import deepspeed

        groups = ExpertParallelGroups.create(model.cfg.ep_size)
        moe = model.make_moe(groups) if model.cfg.adapter == "moe" else None
        params = dense_trainables(model)
        optimizer = adamw(params, optim)
        if self._resharded:
            # DeepSpeed partitions a model's not-yet-ZeRO parameters with the partitioner of its first
            # ZeRO parameter, here a node-partitioned LLM one: partition the trainables over all
            # ranks first, as the engine's gradient reduce-scatter expects
            from deepspeed.runtime.zero.partition_parameters import is_zero_param

            todo = [p for p in model.parameters() if not is_zero_param(p)]
            deepspeed.zero.Init(config_dict_or_path=self.ds_config)._convert_to_zero_parameters(todo)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.ds_config)
        if self.deepcompile:  # "compile": {"deepcompile": true}; unmeasured (docs/training.md)
            engine.compile()
        moe_opt = None
        if moe is not None:
            moe.to(engine.device)  # outside the engine, so not moved by it (GPU ranks)
            moe_opt = adamw(moe.parameters(), optim)
        return TrainState(engine, moe, moe_opt, groups, self.dtype)


@dataclass
class TorchTrainState(StrategyState):
    """TorchStrategy's state: the SellerModel (the frozen LLM inside it), its MoE and one AdamW.
    `step()` is called every micro-batch, as DeepSpeed's engine wants it; the weights move at every
    `grad_accum`-th call, and backward scales the loss by 1/grad_accum as the engine does, so the
    accumulated gradient is the mean's."""

    model: SellerModel
    moe: MoEAdapter | None
    optimizer: torch.optim.Optimizer
    grad_accum: int
    dtype: torch.dtype
    micro_steps: int = 0

    @property
    def forward_module(self) -> torch.nn.Module:
        return self.model

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer]

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum == 0:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip every trainable's gradient (dense and experts together) to `max_norm`; the norm before."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


class TorchStrategy:
    def __init__(self, settings: StrategySettings):
        """Plain PyTorch in one process, the floor DeepSpeed is measured against (`seller-dist
        bench`): the frozen LLM whole on this process's device inside the SellerModel, the MoE with
        every expert beside it, one AdamW over all trainables (fused on a GPU); no DeepSpeed, no
        process group. Of `settings` it reads grad_accum, bf16 and use_gpu; the ZeRO-3 ones
        (llm_layout, persistence, `deepspeed`) have nothing to act on in one process, and those it
        cannot honour (more than one rank, offloading, DeepCompile) are refused."""
        refused = {
            f"world_size={settings.world_size}": settings.world_size != 1,
            "offload_params": settings.offload_params,
            "deepcompile": settings.deepcompile,
        }
        if any(refused.values()):
            raise ValueError(
                f"TorchStrategy trains in one process without DeepSpeed: "
                f"{', '.join(k for k, v in refused.items() if v)} needs DeepSpeedStrategy"
            )
        self.settings = settings

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.settings.bf16 else torch.float32

    @property
    def device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device())
            if self.settings.use_gpu
            else torch.device("cpu")
        )

    @property
    def registers_llm(self) -> bool:
        """The LLM is a submodule of the SellerModel: nothing partitions it here."""
        return True

    def load_llm(self, cfg: ModelConfig, storage_cfg: StorageConfig | None = None) -> FrozenLLM:
        return load_frozen_llm(cfg, self.dtype, storage_cfg).to(self.device)

    def prepare(self, model: SellerModel, optim: OptimConfig) -> TorchTrainState:
        """The model on the device, its MoE (every expert: model.ep_size must be 1) and one AdamW over
        both. Seed before building the model: the MoE is initialised here, after it."""
        model.to(self.device)
        moe = model.make_moe().to(self.device) if model.cfg.adapter == "moe" else None
        params = dense_trainables(model) + (list(moe.parameters()) if moe is not None else [])
        optimizer = adamw(params, optim, fused=self.device.type == "cuda")
        return TorchTrainState(model, moe, optimizer, self.settings.grad_accum, self.dtype)
