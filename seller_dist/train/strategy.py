"""The one place that talks to DeepSpeed (OpenRLHF-style): config, partitioned LLM loading, engine
building, and the backward/step that also serves the expert-parallel MoE kept outside the engine.

Layout (docs/model.md, "DeepSpeed (train/strategy.py)"): the ZeRO-3 engine wraps SellerModel (frozen LLM + dense
trainable modules); the MoE adapter holds only this rank's experts, is NOT a submodule of the
engine's model (passed to forward as `moe=`), and has its own torch optimizer. After
`engine.backward(loss)`, `reduce_moe_gradients` fixes the expert/router gradients, then both step.

Usage inside a worker (torch.distributed env vars set; on CPU DS_ACCELERATOR=cpu):
    strategy = DeepSpeedStrategy(zero3_config(micro_batch_size=8))
    strategy.init_distributed()
    llm = strategy.load_llm(model_cfg)                 # partitioned while loading (llm_layout=zero3)
    model = SellerModel(model_cfg, vocab, llm, register_llm=strategy.registers_llm)
    state = strategy.prepare(model, lr=1e-3)           # engine + MoE + optimizers
    out = state.forward(batch); state.backward(out["loss"]); state.step()
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from seller_dist.config import ModelConfig, StorageConfig
from seller_dist.model.expert_parallel import ExpertParallelGroups, expert_grad_norm_sq, reduce_moe_gradients
from seller_dist.model.llm import FrozenLLM
from seller_dist.model.moe import MoEAdapter
from seller_dist.model.seller import SellerModel


def zero3_config(
    micro_batch_size: int,
    grad_accum: int = 1,
    bf16: bool = False,
    offload_params: bool = False,
    persistence_threshold: int | None = None,
) -> dict[str, Any]:
    """A ZeRO-3 config for a client torch optimizer (no DeepSpeed optimizer JIT builds).

    Gradient clipping is switched OFF here (DeepSpeed's default clips the engine's gradients alone at
    1.0, missing the MoE's, and silently on any step that does not clip by hand): clip both together
    with `TrainState.clip_grad_norm` instead. `persistence_threshold`: parameters smaller
    than this stay whole on every rank (DeepSpeed's default 1e5; tests use 0 to partition all).
    """
    zero: dict[str, Any] = {"stage": 3}
    if persistence_threshold is not None:
        zero["stage3_param_persistence_threshold"] = persistence_threshold
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,  # a client optimizer with offload
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


@dataclass
class TrainState:
    engine: Any  # deepspeed.DeepSpeedEngine wrapping the SellerModel
    moe: MoEAdapter | None
    moe_optimizer: torch.optim.Optimizer | None
    groups: ExpertParallelGroups
    dtype: torch.dtype

    @property
    def model(self) -> SellerModel:
        return self.engine.module

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        # No input casting needed: each module casts float inputs to its own weight dtype. Under
        # bf16 the LLM loads in bf16 while the dense trainables (built outside zero.Init) stay fp32
        # and the MoE (outside the engine) stays fp32; soft vectors are cast into the LLM's dtype.
        return self.engine(batch, moe=self.moe)

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
        and step(), at the accumulation boundary); returns the total norm before clipping.

        The engine alone would clip by its own norm and miss the experts, so: its norm (ZeRO-3
        partitions, all-reduced by DeepSpeed) and the MoE norm (every expert once + router) combine
        to the global norm; the MoE grads are scaled here and the engine's optimizer is given the
        clip threshold that yields the same factor. Uses DeepSpeed 0.19 ZeRO-3 internals
        (`_get_norm_groups`, `clip_grad`); tests/integration/test_zero3_model.py pins the behaviour.
        """
        from deepspeed.runtime.utils import combine_grad_norm_groups

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
    def __init__(self, ds_config: dict[str, Any], llm_layout: str = "zero3"):
        """`llm_layout`: "zero3" partitions the frozen LLM while it loads (any size); "replicated"
        loads a whole copy on this rank's device and keeps it outside the engine (no gathers)."""
        self.ds_config = ds_config
        self.llm_layout = llm_layout
        self.stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        self._hf_ds_config = None
        if self.stage == 3 and llm_layout == "zero3":
            from transformers.integrations import HfDeepSpeedConfig

            # must stay referenced while models load: from_pretrained then partitions (zero.Init)
            self._hf_ds_config = HfDeepSpeedConfig(ds_config)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.ds_config.get("bf16", {}).get("enabled") else torch.float32

    def init_distributed(self, backend: str | None = None) -> None:
        """gloo on CPU (oneCCL is not installed), nccl on GPUs; reads RANK/WORLD_SIZE/MASTER_* env."""
        import deepspeed

        if backend is None:
            backend = (
                "nccl" if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu" else "gloo"
            )
        deepspeed.init_distributed(dist_backend=backend)

    def load_llm(self, cfg: ModelConfig, storage_cfg: StorageConfig | None = None) -> FrozenLLM:
        dtype = "bfloat16" if self.dtype == torch.bfloat16 else cfg.llm_dtype
        llm = FrozenLLM.from_pretrained(
            cfg.llm_path,
            dtype,
            cfg.llm_cache_dir,
            storage_cfg,
            cfg.trust_remote_code,
            cfg.allow_pickle_weights,
        )
        on_gpu = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"
        if self.llm_layout == "replicated" and on_gpu:  # the worker's device (outside the engine)
            llm.to(torch.device("cuda", torch.cuda.current_device()))
        return llm

    @property
    def registers_llm(self) -> bool:
        """Whether the SellerModel should hold the LLM as a submodule (inside the engine)."""
        return self.llm_layout == "zero3"

    def prepare(
        self,
        model: SellerModel,
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> TrainState:
        """Engine over the model's dense trainables (client AdamW) + this rank's MoE and its AdamW.
        Call on every rank with identically initialised modules (seed before building)."""
        import deepspeed

        groups = ExpertParallelGroups.create(model.cfg.ep_size)
        moe = model.make_moe(groups) if model.cfg.adapter == "moe" else None
        params = [p for _, p in model.trainable_named_parameters()]
        if not params:
            raise ValueError(
                "model.adapter=none has no trainable parameters: evaluate it directly instead of training"
            )
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.ds_config)
        moe_opt = None
        if moe is not None:
            moe.to(engine.device)  # outside the engine, so not moved by it (GPU ranks)
            moe_opt = torch.optim.AdamW(
                moe.parameters(), lr=lr, weight_decay=weight_decay, betas=betas, eps=eps
            )
        return TrainState(engine, moe, moe_opt, groups, self.dtype)
