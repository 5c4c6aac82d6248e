"""Utility protocol 1, retrieval: does the explanation point at the recommended item?
For each example it ranks the target among `num_negatives` items the user never touched by the cosine
between the explanation's sentence vector and the items' text vectors, with negatives seeded by the record
key, so an example gets the same candidates whatever the order or the number of workers; it reports HR@1/5/10,
NDCG@10 and MRR of the generated, the reference and a generic explanation (docs/evaluation.md, "Retrieval").
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ExampleRecord
from seller_dist.data.sentence_embeddings import item_text
from seller_dist.eval.text_metrics import summary

KS = (1, 5, 10)


def item_vectors(catalog: ItemCatalog, encoder: Any, batch_size: int = 64) -> np.ndarray:
    """(num_items + 1, D) L2-normalized item vectors (row 0 = padding, zeros)."""
    if catalog.embedding_dim:
        emb = catalog.embeddings.astype(np.float32)
    else:
        c = catalog
        texts = [item_text(c.titles[i], c.texts[i], c.item_ids[i]) for i in range(1, c.num_items + 1)]
        emb = np.concatenate([np.zeros((1, encoder.dim), np.float32), encoder.sentences(texts, batch_size)])
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norm > 0, norm, 1.0)


def touched_items(records: Sequence[ExampleRecord]) -> dict[str, set[int]]:
    """user -> item idxs of every history event and target of that user's records."""
    out: dict[str, set[int]] = {}
    for r in records:
        s = out.setdefault(r.user_id, set())
        s.add(r.item_idx)
        s.update(h.item_idx for h in r.history)
    return out


def sample_negatives(key: str, num_items: int, exclude: set[int], k: int, seed: int) -> np.ndarray:
    """k item idxs in [1, num_items] outside `exclude`, the same for the same (seed, key)."""
    pool = np.setdiff1d(np.arange(1, num_items + 1), np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    if len(pool) <= k:
        return pool
    return np.sort(rng.choice(pool, size=k, replace=False))


def candidate_sets(records: Sequence[ExampleRecord], num_items: int, k: int, seed: int) -> list[np.ndarray]:
    """Per record: [target idx, negatives...]."""
    touched = touched_items(records)
    return [
        np.concatenate(
            [[r.item_idx], sample_negatives(r.key, num_items, touched[r.user_id], k, seed)]
        ).astype(np.int64)
        for r in records
    ]


def target_ranks(
    expl_vecs: np.ndarray, item_vecs: np.ndarray, candidates: Sequence[np.ndarray]
) -> np.ndarray:
    """1-based rank of candidate 0 (the target) per example; ties count against the target."""
    ranks = np.empty(len(candidates), dtype=np.int64)
    for i, cand in enumerate(candidates):
        scores = item_vecs[cand] @ expl_vecs[i]
        ranks[i] = 1 + int(np.sum(scores[1:] >= scores[0]))
    return ranks


def rank_metrics(ranks: np.ndarray) -> dict[str, Any]:
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, Any] = {f"hr@{k}": summary((r <= k).astype(float)) for k in KS}
    out["ndcg@10"] = summary(np.where(r <= 10, 1.0 / np.log2(1.0 + r), 0.0))
    out["mrr"] = summary(1.0 / r)
    return out


def retrieval(
    explanations: dict[str, Sequence[str]],
    records: Sequence[ExampleRecord],
    catalog: ItemCatalog,
    encoder: Any,
    num_negatives: int = 99,
    seed: int = 0,
    batch_size: int = 64,
    item_vecs: np.ndarray | None = None,
) -> dict[str, Any]:
    """{system: {hr@1, hr@5, hr@10, ndcg@10, mrr}} for each named list of explanations (aligned with
    records), all ranked against the same candidate sets."""
    items = item_vecs if item_vecs is not None else item_vectors(catalog, encoder, batch_size)
    cands = candidate_sets(records, catalog.num_items, num_negatives, seed)
    out: dict[str, Any] = {}
    for system, texts in explanations.items():
        if len(texts) != len(records):
            raise ValueError(f"retrieval: {len(texts)} '{system}' explanations for {len(records)} records")
        uniq = sorted(set(texts))
        vec_of = dict(zip(uniq, encoder.sentences(uniq, batch_size), strict=True))
        vecs = np.stack([vec_of[t] for t in texts])
        out[system] = rank_metrics(target_ranks(vecs, items, cands))
    out["num_candidates"] = float(np.mean([len(c) for c in cands]))  # fewer when a user touched most items
    return out
