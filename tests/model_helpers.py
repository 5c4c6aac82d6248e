"""Shared by the model unit tests: the batch's history keys and left padding of them."""

from __future__ import annotations

import torch

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
