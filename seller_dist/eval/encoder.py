"""The offline all-MiniLM-L6-v2 encoder used by evaluation: sentence vectors and token vectors.
One object, loaded once, serves both uses of the same transformer: utility (retrieval, simulator) needs
mean-pooled normalized sentence vectors comparable to the catalog's prep-time item embeddings
(seller_dist.data.sentence_embeddings, the same model and pooling), and BERTScore needs its per-token states.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class TextEncoder:
    """all-MiniLM-L6-v2 on CPU (or `device`), offline: no model hub is contacted."""

    def __init__(self, path: str = "", device: str = "cpu"):
        from seller_dist.data.sentence_embeddings import load_encoder

        self.device = device
        self.sentence_model = load_encoder(path, device)
        # the SentenceTransformer's first module wraps a transformers AutoModel + AutoTokenizer
        self.model = self.sentence_model[0].auto_model
        self.tokenizer = self.sentence_model.tokenizer
        self.model.eval()
        self._cache: dict[str, np.ndarray] = {}  # text -> sentence vector (references recur across metrics)

    @property
    def dim(self) -> int:
        return int(self.sentence_model.get_embedding_dimension())

    def sentences(self, texts: Sequence[str], batch_size: int = 64, cached: bool = True) -> np.ndarray:
        """(n, 384) float32, mean pooled and L2-normalized exactly like the catalog's item vectors.
        Each distinct text is encoded once per encoder. A text's vector depends on its batch only by
        float rounding, and which batch a cached text came from depends on what was encoded before:
        `cached=False` encodes exactly these texts (distinct, sorted) and leaves the cache alone, so
        the result depends on `texts` alone (the learned simulator's training inputs)."""
        from seller_dist.data.sentence_embeddings import embed_texts

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if not cached:
            distinct = sorted(set(texts))
            own = dict(
                zip(distinct, embed_texts(distinct, batch_size, encoder=self.sentence_model), strict=True)
            )
            return np.stack([own[t] for t in texts])
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            vecs = embed_texts(missing, batch_size, encoder=self.sentence_model)
            self._cache.update(zip(missing, vecs, strict=True))
        return np.stack([self._cache[t] for t in texts])

    @torch.no_grad()
    def token_embeddings(
        self, texts: Sequence[str], layer: int = -1, batch_size: int = 64, max_length: int = 128
    ) -> list[np.ndarray]:
        """Per text, the (num_tokens, 384) hidden states of `layer` for its word-piece tokens, without
        [CLS]/[SEP]/padding (BERTScore ignores special tokens). An empty text gives a (0, 384) array."""
        out: list[np.ndarray] = []
        for b in range(0, len(texts), batch_size):
            chunk = list(texts[b : b + batch_size])
            enc = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            special = enc.pop("special_tokens_mask").bool()
            enc = {k: v.to(self.device) for k, v in enc.items()}
            hidden = self.model(**enc, output_hidden_states=True).hidden_states[layer].float().cpu()
            keep = enc["attention_mask"].cpu().bool() & ~special
            for i in range(len(chunk)):
                out.append(hidden[i][keep[i]].numpy().astype(np.float32))
        return out
