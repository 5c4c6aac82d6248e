"""Utility protocol 2, simulated users: would this user accept this item shown with this explanation?
It gives the acceptance (simulated CTR) of each target shown with each explanation by two simulators: a
learned one for any source (a logistic regression over history, item and explanation vectors, fitted on a
split the explainer never trained on, each accepted and sampled item shown with the reference, no and the
generic explanation, so that it learns how far an explanation fits the item), and the synthetic source's
exact one (the generator's latent taste plus a grounding bonus); docs/evaluation.md defines both.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ExampleRecord
from seller_dist.eval.grounding import cited_offsets
from seller_dist.eval.text_metrics import summary
from seller_dist.eval.utility import sample_negatives, touched_items

RECENCY_DECAY = 0.8


def history_vectors(records: Sequence[ExampleRecord], item_vecs: np.ndarray) -> np.ndarray:
    out = np.zeros((len(records), item_vecs.shape[1]), np.float32)
    for n, r in enumerate(records):
        if not r.history:
            continue
        idx = np.array([h.item_idx for h in r.history])
        w = RECENCY_DECAY ** np.arange(len(idx))[::-1]
        v = (w[:, None] * item_vecs[idx]).sum(0)
        out[n] = v / max(np.linalg.norm(v), 1e-12)
    return out


def features(h: np.ndarray, i: np.ndarray, e: np.ndarray) -> np.ndarray:
    has = (np.abs(e).sum(1, keepdims=True) > 0).astype(np.float32)
    return np.concatenate([h, i, e, h * i, e * i, h * e, has], axis=1).astype(np.float32)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def is_holdout(user_id: str, fraction: float) -> bool:
    return zlib.crc32(f"sim-holdout:{user_id}".encode()) % 10_000 < fraction * 10_000


@dataclass
class LearnedSimulator:
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(torch.from_numpy(x) @ self.weight + self.bias).numpy()

    @staticmethod
    def fit(x: np.ndarray, y: np.ndarray, l2: float, iters: int, seed: int) -> LearnedSimulator:
        """Full-batch L-BFGS logistic regression (deterministic for a given seed and data)."""
        torch.manual_seed(seed)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return LearnedSimulator(w.detach(), b.detach())


def simulator_examples(
    records: Sequence[ExampleRecord],
    item_vecs: np.ndarray,
    ref_vecs: np.ndarray,
    generic_vec: np.ndarray,
    negatives: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, condition) with condition 0 = reference, 1 = none, 2 = generic."""
    touched = touched_items(records)
    num_items = item_vecs.shape[0] - 1
    hv = history_vectors(records, item_vecs)
    rows_h, rows_i, rows_e, labels, cond = [], [], [], [], []
    zero = np.zeros_like(generic_vec)
    for n, r in enumerate(records):
        items = [
            r.item_idx,
            *sample_negatives(f"sim:{r.key}", num_items, touched[r.user_id], negatives, seed),
        ]
        for k, idx in enumerate(items):
            for c, e in enumerate((ref_vecs[n], zero, generic_vec)):
                rows_h.append(hv[n])
                rows_i.append(item_vecs[idx])
                rows_e.append(e)
                labels.append(1.0 if k == 0 else 0.0)
                cond.append(c)
    x = features(np.stack(rows_h), np.stack(rows_i), np.stack(rows_e))
    return x, np.array(labels), np.array(cond)


def learned_simulation(
    sim_records: Sequence[ExampleRecord],
    records: Sequence[ExampleRecord],
    explanations: dict[str, Sequence[str]],
    item_vecs: np.ndarray,
    encoder: Any,
    generic: str,
    cfg: Any,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Train on sim_records (a split the explainer never saw), report hold-out AUC and the acceptance
    of each system's explanations on `records` (plus "none": no explanation)."""
    sim_records = list(sim_records)[: cfg.max_train_examples]
    if len(sim_records) < 4:
        raise ValueError(
            f"simulator: only {len(sim_records)} records in split '{cfg.train_split}' to learn from"
        )
    hold = [r for r in sim_records if is_holdout(r.user_id, cfg.holdout_fraction)]
    train = [r for r in sim_records if not is_holdout(r.user_id, cfg.holdout_fraction)]
    if not hold or not train:
        raise ValueError(
            "simulator: the hold-out split left no training or no hold-out users; change holdout_fraction"
        )
    # cached=False: the simulator's inputs must not depend on what this encoder scored before, so that
    # every system scored against the dataset is judged by the same simulator, bit for bit
    generic_vec = encoder.sentences([generic], batch_size, cached=False)[0]

    def build(recs: list[ExampleRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        refs = encoder.sentences([r.explanation for r in recs], batch_size, cached=False)
        return simulator_examples(recs, item_vecs, refs, generic_vec, cfg.negatives_per_positive, cfg.seed)

    x, y, _ = build(train)
    sim = LearnedSimulator.fit(x, y, cfg.l2, cfg.epochs, cfg.seed)
    xh, yh, ch = build(hold)
    ph = sim.predict(xh)
    out: dict[str, Any] = {
        "train_split": cfg.train_split,
        "train_records": len(train),
        "holdout_records": len(hold),
        "holdout_auc": float(auc(ph, yh)),
        "holdout_auc_by_condition": {
            name: float(auc(ph[ch == c], yh[ch == c]))
            for c, name in enumerate(("reference", "none", "generic"))
        },
    }
    hv = history_vectors(records, item_vecs)
    iv = item_vecs[[r.item_idx for r in records]]
    acc: dict[str, Any] = {"none": summary(sim.predict(features(hv, iv, np.zeros_like(hv))))}
    for system, texts in explanations.items():
        ev = encoder.sentences(list(texts), batch_size)
        acc[system] = summary(sim.predict(features(hv, iv, ev)))
    out["acceptance"] = acc
    verdict = informativeness(out, cfg.min_holdout_auc, cfg.min_acceptance_spread)
    out["informative"] = verdict["informative"]
    out["informativeness"] = verdict
    return out


SPREAD_CONDITIONS = ("reference", "generic", "none")


def informativeness(learned: dict[str, Any], min_auc: float, min_spread: float) -> dict[str, Any]:
    """Is the learned simulator worth reporting? It is UNINFORMATIVE when its hold-out AUC is below
    `min_auc` (it barely tells accepted items from sampled ones) or when the spread (max - min) of its
    mean acceptance of the scored targets shown the reference, the generic and no explanation is
    below `min_spread` (what it is shown hardly moves it, so it cannot rank explanations). A value
    that could not be measured (NaN AUC; fewer than two conditions: spread None) counts as below."""
    acc = learned.get("acceptance", {})
    means = {c: float(acc[c]["mean"]) for c in SPREAD_CONDITIONS if c in acc}
    spread = max(means.values()) - min(means.values()) if len(means) >= 2 else None
    auc_value = float(learned["holdout_auc"])
    reasons = []
    if not auc_value >= min_auc:
        reasons.append(f"hold-out AUC {auc_value:.4f} < simulator.min_holdout_auc {min_auc:g}")
    if spread is None:
        reasons.append(f"acceptance spread not measured (needs two of {list(SPREAD_CONDITIONS)})")
    elif not spread >= min_spread:
        shown = ", ".join(f"{c} {v:.4f}" for c, v in means.items())
        reasons.append(
            f"acceptance spread {spread:.4f} (shown {shown}) < simulator.min_acceptance_spread {min_spread:g}"
        )
    return {
        "informative": not reasons,
        "holdout_auc": auc_value,
        "min_holdout_auc": min_auc,
        "acceptance_spread": spread,
        "acceptance_by_condition": means,
        "min_acceptance_spread": min_spread,
        "reasons": reasons,
    }


# ------------------------------------------------------------------------------ exact (synthetic)
def related_offsets(record: ExampleRecord, item_idx: int, catalog: ItemCatalog) -> list[int]:
    """Offsets (0 = most recent) of history events sharing the item's category or brand."""
    a = catalog.attributes[item_idx]
    out = []
    for i, h in enumerate(record.history):
        b = catalog.attributes[h.item_idx]
        if (a.get("category") and a.get("category") == b.get("category")) or (
            a.get("brand") and a.get("brand") == b.get("brand")
        ):
            out.append(len(record.history) - 1 - i)
    return sorted(out)


def grounding_bonus(text: str | None, record: ExampleRecord, item_idx: int, catalog: ItemCatalog) -> float:
    if not text:
        return 0.0
    cited = set(cited_offsets(text, record.history))
    if not cited:
        return 0.0
    related = related_offsets(record, item_idx, catalog)
    if related and related[0] in cited:
        return 0.3
    if cited & set(related):
        return 0.15
    return -0.2


def exact_acceptance(
    record: ExampleRecord, item_idx: int, text: str | None, catalog: ItemCatalog, categories: Sequence[str]
) -> float:
    """P(accept) from the synthetic generator's latent taste (docs/evaluation.md, "Simulated users")."""
    taste = record.meta.get("taste")
    if not isinstance(taste, list) or len(taste) != len(categories) or max(taste) <= 0:
        raise ValueError(
            f"record {record.key}: meta.taste must list {len(categories)} weights (manifest source.categories)"
        )
    cat = catalog.attributes[item_idx].get("category")
    base = taste[categories.index(cat)] / max(taste) if cat in categories else 0.0
    return float(np.clip(0.1 + 0.6 * base + grounding_bonus(text, record, item_idx, catalog), 0.0, 1.0))


def exact_simulation(
    records: Sequence[ExampleRecord],
    explanations: dict[str, Sequence[str]],
    catalog: ItemCatalog,
    categories: Sequence[str],
) -> dict[str, Any]:
    """Acceptance of the target item with each system's explanation and with none."""
    acc = {"none": summary([exact_acceptance(r, r.item_idx, None, catalog, categories) for r in records])}
    for system, texts in explanations.items():
        acc[system] = summary(
            [
                exact_acceptance(r, r.item_idx, t, catalog, categories)
                for r, t in zip(records, texts, strict=True)
            ]
        )
    return {"acceptance": acc}
