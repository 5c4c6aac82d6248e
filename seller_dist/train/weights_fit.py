"""Do these weights fit this model: the trainable tensors a model config builds (on the meta device:
no memory, no LLM weights read) against the tensors of trained weights. The eval job's preflight and
the warm start (`init_from`) both ask it before any worker loads an LLM."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from seller_dist.config import ModelConfig
from seller_dist.train.export import MOE_PREFIX

Shape = tuple[int, ...]


def expected_shapes(
    model_cfg: ModelConfig, vocab: Any, hidden_size: int
) -> tuple[dict[str, Shape], dict[str, tuple[str, int]]]:
    """(trainable name -> shape, indexed tables) of the model this config builds, experts as the
    ep_size=1 "moe.*" names of an export. Built on the meta device: no memory, no LLM."""
    from seller_dist.model.seller import SellerModel

    cfg = dataclasses.replace(model_cfg, ep_size=1)
    stub = types.SimpleNamespace(hidden_size=hidden_size)
    with torch.device("meta"):
        model = SellerModel(cfg, vocab, stub, register_llm=False)  # type: ignore[arg-type]
        shapes = {n: tuple(p.shape) for n, p in model.trainable_named_parameters()}
        if cfg.adapter == "moe":
            shapes.update(
                {f"{MOE_PREFIX}{k}": tuple(v.shape) for k, v in model.make_moe().state_dict().items()}
            )
    return shapes, model.indexed_parameters()


@dataclass
class Misfit:
    """What keeps weights from fitting a model; empty when they fit."""

    missing: list[str]  # the model has it, the weights do not (in the model's order)
    wrong: list[str]  # both have it, in another shape (in the model's order)
    unexpected: list[str]  # the weights have it, the model has no place for it (sorted)

    def __bool__(self) -> bool:
        return bool(self.missing or self.wrong or self.unexpected)

    def first(self, shapes: Mapping[str, Shape]) -> str | None:
        """The first key of the model, in its order, that is missing or of another shape."""
        bad = {*self.missing, *self.wrong}
        return next((k for k in shapes if k in bad), None)


def misfit(
    shapes: Mapping[str, Shape],
    weights: Mapping[str, torch.Tensor],
    fits: Callable[[str, Shape, Shape], bool] | None = None,
) -> Misfit:
    """Compare the model's `shapes` with `weights` by name and shape. `fits(key, got, want)` decides
    where equal shapes are not the rule (the warm start's tables whose rows are mapped by id)."""
    same = fits or (lambda key, got, want: got == want)
    return Misfit(
        missing=[k for k in shapes if k not in weights],
        wrong=[
            k for k, want in shapes.items() if k in weights and not same(k, tuple(weights[k].shape), want)
        ],
        unexpected=sorted(set(weights) - set(shapes)),
    )
