"""Fusion: which past events justify this item (cross-attention) + who the user is now (summary)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from seller_dist.config import ModelConfig


class FusionOutput(NamedTuple):  # NamedTuple: ZeRO-3's module hooks see its tensors
    fused: torch.Tensor  # [B, d]
    attention: torch.Tensor  # [B, L] head-averaged weights over history events (0 at padding)
    intent: torch.Tensor  # [B, d] pooled user intent (history summary)


class CrossAttentionFusion(nn.Module):
    """The item representation queries the history states. Weights are returned so evaluation can
    report which past events support an explanation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.num_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.mix = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, item: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, intent: torch.Tensor):
        b, length, d = states.shape
        h, dh = self.heads, d // self.heads
        q = self.q(item).view(b, h, 1, dh)
        k, v = self.kv(states).view(b, length, 2, h, dh).permute(2, 0, 3, 1, 4)  # each [B, h, L, dh]
        scores = (q @ k.transpose(-1, -2)).squeeze(2).float() / dh**0.5  # [B, h, L], softmax in fp32
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        has_any = mask.any(dim=1)
        # rows with no real event: all -inf -> NaN; give them zero weights instead
        scores = torch.where(has_any[:, None, None], scores, torch.zeros_like(scores))
        weights = torch.softmax(scores, dim=-1) * has_any[:, None, None]
        context = (weights.to(v.dtype).unsqueeze(2) @ v).squeeze(2).reshape(b, d)
        context = self.out(context)
        fused = self.norm(item + self.mix(torch.cat([item, context, intent], dim=-1)))
        return FusionOutput(fused, weights.mean(dim=1), intent)
