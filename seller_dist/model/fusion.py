"""Fusion: which past events justify this item (cross-attention over the history states, with an
attribute-match and a recency bias on the logits) + who the user is now (the history summary); the
attention weights it returns are what evaluation reports as an explanation's supporting events
(docs/model.md, "Titles, attributes and the fusion's biases", gives the logit).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from seller_dist.config import ModelConfig

# Adam moves a parameter by about lr per step, but a useful logit bias is several units: the bias
# tables are stored divided by this gain (for Adam, the same as a gain-times larger learning rate)
BIAS_GAIN = 10.0


class FusionOutput(NamedTuple):  # NamedTuple: ZeRO-3's module hooks see its tensors
    fused: torch.Tensor  # [B, d]
    attention: torch.Tensor  # [B, L] head-averaged weights over history events (0 at padding)
    intent: torch.Tensor  # [B, d] pooled user intent (history summary)


def attribute_match(hist_attrs: torch.Tensor, item_attrs: torch.Tensor) -> torch.Tensor:
    """[B, L, F] 1.0 where an event's attribute value equals the target item's (unknowns never match)."""
    same = (hist_attrs == item_attrs[:, None, :]) & (item_attrs[:, None, :] > 0)
    return same.float()


class CrossAttentionFusion(nn.Module):
    """The item representation queries the history states. Weights are returned so evaluation can
    report which past events support an explanation."""

    def __init__(self, cfg: ModelConfig, num_fields: int = 0, ordered: bool = True):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.num_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.mix = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, d))
        self.norm = nn.LayerNorm(d)
        use_match = cfg.target_match_bias and num_fields > 0
        self.match = nn.Parameter(torch.zeros(cfg.num_heads, num_fields)) if use_match else None
        # ... and the attended events' match pattern joins the context: WHICH attributes the supporting
        # event shares with the target is what an explanation says ("another X item from Y")
        self.match_value = nn.Linear(num_fields, d, bias=False) if use_match else None
        use_recency = cfg.recency_bias and ordered
        self.recency = nn.Parameter(torch.zeros(cfg.num_heads, cfg.max_history)) if use_recency else None
        # + a per-head slope on log(1 + rank): one number that every event's gradient moves, so
        # "newer first" is learned in hundreds of steps where the per-rank table takes thousands
        self.recency_slope = nn.Parameter(torch.zeros(cfg.num_heads)) if use_recency else None

    def forward(
        self,
        item: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        intent: torch.Tensor,
        match: torch.Tensor | None = None,
    ) -> FusionOutput:
        """`match` [B, L, F]: `attribute_match(hist_attrs, item_attrs)`; needed when the match bias is on."""
        b, length, d = states.shape
        h, dh = self.heads, d // self.heads
        q = self.q(item).view(b, h, 1, dh)
        k, v = self.kv(states).view(b, length, 2, h, dh).permute(2, 0, 3, 1, 4)  # each [B, h, L, dh]
        scores = (q @ k.transpose(-1, -2)).squeeze(2).float() / dh**0.5  # [B, h, L], softmax in fp32
        if self.match is not None:
            if match is None or match.shape[-1] != self.match.shape[1]:
                got = None if match is None else match.shape[-1]
                raise ValueError(
                    f"the fusion's target-match bias needs a [B, L, {self.match.shape[1]}] attribute "
                    f"match (hist_attrs against item_attrs), got {got} fields"
                )
            scores = scores + BIAS_GAIN * torch.einsum("blf,hf->bhl", match.float(), self.match.float())
        if self.recency is not None:
            # LEFT-padded: the last column is the newest event whatever the row's length
            rank = (length - 1 - torch.arange(length, device=states.device)).clamp(
                max=self.recency.shape[1] - 1
            )
            slope = self.recency_slope.float()[:, None] * torch.log1p(rank.float())[None]  # [h, L]
            scores = scores + BIAS_GAIN * (self.recency.float()[:, rank] + slope)[None]
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        has_any = mask.any(dim=1)
        # rows with no real event: all -inf -> NaN; give them zero weights instead
        scores = torch.where(has_any[:, None, None], scores, torch.zeros_like(scores))
        weights = torch.softmax(scores, dim=-1) * has_any[:, None, None]
        context = (weights.to(v.dtype).unsqueeze(2) @ v).squeeze(2).reshape(b, d)
        context = self.out(context)
        if self.match_value is not None and match is not None:
            shared = (weights.mean(dim=1).unsqueeze(1) @ match.float()).squeeze(1)  # [B, F]
            context = context + self.match_value(shared.to(context.dtype))
        fused = self.norm(item + self.mix(torch.cat([item, context, intent], dim=-1)))
        return FusionOutput(fused, weights.mean(dim=1), intent)
