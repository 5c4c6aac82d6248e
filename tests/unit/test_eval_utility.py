"""Retrieval utility on a crafted catalog whose ranks are known, and the negative sampling contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ExampleRecord, HistoryEvent
from seller_dist.eval.utility import candidate_sets, item_vectors, retrieval, sample_negatives


class FixedEncoder:
    """Sentence vectors from a fixed table: the crafted scores below need exact geometry."""

    dim = 2

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls: list[list[str]] = []

    def sentences(self, texts, batch_size=64):
        self.calls.append(list(texts))
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def _catalog(vectors: list[list[float]] | None) -> ItemCatalog:
    n = 5
    emb = np.zeros((n + 1, 2 if vectors else 0), np.float32)
    if vectors:
        emb[1:] = vectors
    return ItemCatalog(
        [""] + [f"Item {i}" for i in range(1, n + 1)],
        [{}] + [{"category": "c"} for _ in range(n)],
        [""] + [f"text {i}" for i in range(1, n + 1)],
        emb,
        {},
        [""] + [f"i{i}" for i in range(1, n + 1)],
    )


def _rec(key: str, user: str, target: int, history: list[int]) -> ExampleRecord:
    hist = [HistoryEvent(f"i{h}", h, 10 + j, "view") for j, h in enumerate(history)]
    return ExampleRecord(key, user, f"i{target}", target, 100, hist, {}, "", "ref", "test")


# item vectors: 1=[.8,.6] 2=[-1,0] 3=[1,0] 4=[.6,.8] 5=[0,1]
VECTORS = [[0.8, 0.6], [-1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
RECORDS = [
    _rec("a", "ua", 1, [2]),  # candidates 1 + {3,4,5}; x-axis scores .8 | 1, .6, 0 -> rank 2
    _rec("b", "ub", 3, [4]),  # candidates 3 + {1,2,5}; y-axis scores 0 | .6, 0 (tie), 1 -> rank 4
    _rec("c", "uc", 5, []),  # candidates 5 + {1,2,3,4}; y-axis scores 1 | .6, 0, 0, .8 -> rank 1
]


def test_retrieval_exact_ranks():
    enc = FixedEncoder({"x": [1.0, 0.0], "y": [0.0, 1.0], "generic": [0.6, 0.8]})
    out = retrieval(
        {"generated": ["x", "y", "y"], "generic": ["generic"] * 3},
        RECORDS,
        _catalog(VECTORS),
        enc,
        num_negatives=99,
        seed=0,
    )
    g = out["generated"]
    ranks = np.array([2, 4, 1])
    assert g["hr@1"]["mean"] == pytest.approx(1 / 3)
    assert g["hr@5"]["mean"] == g["hr@10"]["mean"] == 1.0
    assert g["mrr"]["mean"] == pytest.approx(np.mean(1 / ranks))
    assert g["mrr"]["std"] == pytest.approx(np.std(1 / ranks))
    assert g["ndcg@10"]["mean"] == pytest.approx(np.mean([1 / math.log2(1 + r) for r in ranks]))
    # generic [.6,.8]: a: target .96 vs 1:.. -> candidates 3:.6 4:1.0 5:.8 -> rank 2; b: target .6 vs 1:.96,
    # 2:-.6, 5:.8 -> rank 3; c: target .8 vs 1:.96 2:-.6 3:.6 4:1.0 -> rank 3
    assert out["generic"]["mrr"]["mean"] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 3]))
    assert out["num_candidates"] == pytest.approx(13 / 3)  # 4, 4 and 5 candidates (small catalog)


def test_negatives_are_untouched_seeded_and_order_free():
    recs = [_rec(f"k{i}", f"u{i % 3}", 1 + i % 50, [2 + (i * 7) % 40, 3]) for i in range(30)]
    a = candidate_sets(recs, 200, 20, seed=5)
    b = candidate_sets(recs[::-1], 200, 20, seed=5)[::-1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    touched: dict[str, set[int]] = {}
    for r in recs:
        touched.setdefault(r.user_id, set()).update({r.item_idx, *(h.item_idx for h in r.history)})
    for r, c in zip(recs, a, strict=True):
        assert c[0] == r.item_idx and len(c) == 21 and len(set(c[1:].tolist())) == 20
        assert not set(c[1:].tolist()) & touched[r.user_id]
    other = candidate_sets(recs, 200, 20, seed=6)
    assert any(not np.array_equal(x, y) for x, y in zip(a, other, strict=True))
    assert sample_negatives("k", 3, {1, 2, 3}, 5, 0).size == 0


def test_item_vectors_embed_title_and_text_when_the_catalog_has_none():
    enc = FixedEncoder({f"Item {i}. text {i}": v for i, v in enumerate(VECTORS, start=1)})
    vec = item_vectors(_catalog(None), enc)
    assert enc.calls == [[f"Item {i}. text {i}" for i in range(1, 6)]]
    assert np.allclose(vec[1:], VECTORS) and not vec[0].any()
