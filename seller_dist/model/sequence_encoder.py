"""History encoders: causal Transformer (default), GRU, and an order-free bag (XRec-like baseline).
Each reads the LEFT-padded history (newest event last) and returns per-event states [B, L, d] (zero at
padding) and a pooled user summary [B, d]; padding never changes a real event's output, and a row with
no real event gives zeros, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from seller_dist.config import ModelConfig
from seller_dist.data.schema import ACTIONS


class HistoryEncoding(NamedTuple):  # a NamedTuple, not a dataclass: ZeRO-3's module hooks see its tensors
    states: torch.Tensor  # [B, L, d], zero where hist_mask is False
    summary: torch.Tensor  # [B, d] pooled user intent
    mask: torch.Tensor  # [B, L] bool, True = real event


class EventEmbedding(nn.Module):
    """item (+ attributes, title) + action + rating (+ two time-gap buckets and position for
    sequence-aware encoders). The attribute tables are the history's own (the fusion's match bias
    compares attribute values directly, so the two encoders need not share an embedding space)."""

    def __init__(
        self,
        cfg: ModelConfig,
        item_embedding: nn.Embedding,
        with_position: bool,
        with_time: bool = True,
        attribute_sizes: Sequence[int] = (),
        title_dim: int = 0,
    ):
        super().__init__()
        d = cfg.d_model
        self.title = nn.Linear(title_dim, d) if title_dim else None  # LLM title embedding -> d
        self.item = item_embedding  # shared with the item encoder
        self.fields = nn.ModuleList(nn.Embedding(n + 1, d, padding_idx=0) for n in attribute_sizes)
        self.action = nn.Embedding(len(ACTIONS) + 1, d, padding_idx=0)
        self.gap = nn.Embedding(cfg.num_time_buckets, d, padding_idx=0) if with_time else None
        self.target_gap = nn.Embedding(cfg.num_time_buckets, d, padding_idx=0) if with_time else None
        self.rating = nn.Linear(2, d)  # (rating / 5, has_rating)
        self.position = nn.Embedding(cfg.max_history, d) if with_position else None
        self.max_history = cfg.max_history
        self.num_time_buckets = cfg.num_time_buckets
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["hist_mask"]
        dtype = self.rating.weight.dtype
        rating = batch["hist_rating"].to(dtype)
        rating_feat = torch.stack([rating / 5.0, (rating > 0).to(dtype)], dim=-1)
        nb = self.num_time_buckets - 1
        x = self.item(batch["hist_item"]) + self.action(batch["hist_action"]) + self.rating(rating_feat)
        if len(self.fields):
            attrs = batch.get("hist_attrs")
            if attrs is None or attrs.shape[-1] != len(self.fields):
                got = None if attrs is None else attrs.shape[-1]
                raise ValueError(
                    f"hist_attrs has {got} fields but the model was built for {len(self.fields)} "
                    "(vocab.attribute_sizes): the dataset and the model config disagree"
                )
            for f, table in enumerate(self.fields):
                x = x + table(attrs[..., f].clamp(0, table.num_embeddings - 1))
        if self.title is not None:  # model.title_features: SellerModel adds hist_title_emb
            x = x + self.title(batch["hist_title_emb"].to(self.title.weight.dtype))
        if self.gap is not None and self.target_gap is not None:
            x = (
                x
                + self.gap(batch["hist_gap"].clamp(0, nb))
                + self.target_gap(batch["hist_target_gap"].clamp(0, nb))
            )
        if self.position is not None:
            # left padding: position 0 is the first REAL event of each row
            pos = (mask.long().cumsum(dim=1) - 1).clamp(0, self.max_history - 1)
            x = x + self.position(pos)
        x = self.dropout(self.norm(x))
        return x * mask.unsqueeze(-1).to(x.dtype)


class CausalBlock(nn.Module):
    """Pre-norm Transformer block with an explicit boolean attention mask."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.dropout(self.out(a.transpose(1, 2).reshape(b, length, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class TransformerHistoryEncoder(nn.Module):
    """Causal self-attention: event t sees events <= t, never padding. Summary = the last (most recent)
    event's state, which has read the whole history in order."""

    def __init__(self, cfg: ModelConfig, embed: EventEmbedding):
        super().__init__()
        self.embed = embed
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.d_model, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, batch: dict[str, torch.Tensor]) -> HistoryEncoding:
        mask = batch["hist_mask"].bool()
        x = self.embed(batch)
        length = x.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = causal & mask[:, None, :]
        # a padding query would see nothing (softmax of all -inf = NaN): let it see itself; its output
        # is zeroed below and no real query ever attends to it.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=x.device)
        allowed = allowed[:, None]  # [B, 1, L, L], broadcast over heads
        for block in self.blocks:
            x = block(x, allowed)
        states = self.norm(x) * mask.unsqueeze(-1).to(x.dtype)
        return HistoryEncoding(states, states[:, -1], mask)


class GRUHistoryEncoder(nn.Module):
    """GRU over the real events only (packed), so left padding never enters the recurrence."""

    def __init__(self, cfg: ModelConfig, embed: EventEmbedding):
        super().__init__()
        self.embed = embed
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, num_layers=cfg.num_layers, batch_first=True)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, batch: dict[str, torch.Tensor]) -> HistoryEncoding:
        mask = batch["hist_mask"].bool()
        x = self.embed(batch)
        b, length, _ = x.shape
        n = mask.sum(dim=1)
        # left-padded -> left-aligned: column j reads source column (j + L - n) mod L
        cols = torch.arange(length, device=x.device)
        to_left = (cols[None, :] + (length - n)[:, None]) % length
        x_left = x.gather(1, to_left[..., None].expand_as(x))
        packed = nn.utils.rnn.pack_padded_sequence(
            x_left, n.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        back = (cols[None, :] - (length - n)[:, None]) % length  # inverse permutation
        out = out.gather(1, back[..., None].expand_as(out))
        states = self.norm(out) * mask.unsqueeze(-1).to(out.dtype)
        return HistoryEncoding(states, states[:, -1], mask)


class BagHistoryEncoder(nn.Module):
    """Order-free baseline (XRec-like): the history as a SET of (item, action, rating) events, per-event
    MLP, masked mean pooling. No positions and no time gaps: a per-event time-to-target bucket would
    rank the events by recency, i.e. smuggle the order back in."""

    def __init__(self, cfg: ModelConfig, embed: EventEmbedding):
        super().__init__()
        self.embed = embed
        d = cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: dict[str, torch.Tensor]) -> HistoryEncoding:
        mask = batch["hist_mask"].bool()
        m = mask.unsqueeze(-1)
        states = self.norm(self.mlp(self.embed(batch))) * m.to(self.norm.weight.dtype)
        count = m.sum(dim=1).clamp(min=1).to(states.dtype)
        return HistoryEncoding(states, states.sum(dim=1) / count, mask)


def build_history_encoder(
    cfg: ModelConfig, item_embedding: nn.Embedding, attribute_sizes: Sequence[int] = (), title_dim: int = 0
) -> nn.Module:
    """`attribute_sizes`: value counts of the item attribute fields each event reads (`hist_attrs`);
    `title_dim`: the LLM hidden size when events read their title embeddings (`hist_title_emb`)."""
    kinds = {"transformer": TransformerHistoryEncoder, "gru": GRUHistoryEncoder, "bag": BagHistoryEncoder}
    embed = EventEmbedding(
        cfg,
        item_embedding,
        with_position=cfg.history_encoder == "transformer",  # the GRU reads order from its recurrence
        with_time=cfg.history_encoder != "bag",  # see BagHistoryEncoder
        attribute_sizes=attribute_sizes,
        title_dim=title_dim,
    )
    return kinds[cfg.history_encoder](cfg, embed)
