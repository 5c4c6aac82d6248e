"""Shared by the model tests: the one tiny ModelConfig, the batch's history keys and left padding."""

from __future__ import annotations

from typing import Any

import torch

from seller_dist.config import ModelConfig


def tiny_model_config(llm_path: str = "", **overrides: Any) -> ModelConfig:
    """The small SELLER every model, checkpoint and eval test builds (a test changes what it needs)."""
    base: dict[str, Any] = dict(
        d_model=32, num_heads=4, num_layers=1, dropout=0.0, expert_hidden=32, num_experts=4, top_k=2,
        llm_path=llm_path,
    )  # fmt: skip
    return ModelConfig(**{**base, **overrides})


HIST_KEYS = (  # every per-event batch entry ([B, L, ...], left-padded like the collate writes it)
    "hist_item",
    "hist_action",
    "hist_gap",
    "hist_target_gap",
    "hist_rating",
    "hist_mask",
    "hist_attrs",
    "hist_title_ids",
)
HIST_FILLS = {"hist_title_ids": -1}  # the collate's padding value where it is not 0


def pad_left(b: dict[str, torch.Tensor], keys, extra: int, fills: dict) -> dict[str, torch.Tensor]:
    """`extra` more columns on the left of each of `keys`, filled with fills.get(key, 0)."""
    out = dict(b)
    for k in keys:
        x = b[k]
        pad = torch.full((x.shape[0], extra, *x.shape[2:]), fills.get(k, 0), dtype=x.dtype)
        out[k] = torch.cat([pad, x], dim=1)
    return out


def left_pad(b: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    """The same histories with `extra` more padding columns on the left."""
    return pad_left(b, HIST_KEYS, extra, HIST_FILLS)
