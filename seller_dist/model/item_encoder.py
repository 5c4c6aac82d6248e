"""Target-item encoder: id embedding (shared with the history) + attribute fields + text embedding."""

from __future__ import annotations

import torch
from torch import nn

from seller_dist.config import ModelConfig
from seller_dist.model.vocab import ModelVocab


class ItemEncoder(nn.Module):
    """Semantic attributes matter for cold items whose id embedding is barely trained, so each field
    gets its own table (0 = unknown) and the frozen text embedding is projected in."""

    def __init__(self, cfg: ModelConfig, vocab: ModelVocab, item_embedding: nn.Embedding, title_dim: int = 0):
        super().__init__()
        d = cfg.d_model
        self.item = item_embedding
        self.fields = nn.ModuleList(nn.Embedding(n + 1, d, padding_idx=0) for n in vocab.attribute_sizes)
        self.text = nn.Linear(vocab.text_dim, d) if vocab.text_dim > 0 else None
        self.title = nn.Linear(title_dim, d) if title_dim else None  # LLM title embedding -> d
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.item(batch["item"])
        if self.title is not None:  # model.title_features: SellerModel adds item_title_emb
            x = x + self.title(batch["item_title_emb"].to(self.title.weight.dtype))
        attrs = batch.get("item_attrs")
        if self.fields:
            if attrs is None or attrs.shape[1] != len(self.fields):
                got = None if attrs is None else attrs.shape[1]
                raise ValueError(
                    f"item_attrs has {got} fields but the model was built for {len(self.fields)} "
                    "(vocab.attribute_sizes): the dataset and the model config disagree"
                )
            for f, table in enumerate(self.fields):
                x = x + table(attrs[:, f].clamp(0, table.num_embeddings - 1))
        if self.text is not None:
            emb = batch["item_text_emb"]
            if emb.shape[-1] != self.text.in_features:
                raise ValueError(
                    f"item_text_emb has dim {emb.shape[-1]}, the model expects {self.text.in_features}"
                )
            x = x + self.text(emb.to(self.text.weight.dtype))
        return self.norm(x)
