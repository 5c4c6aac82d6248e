"""Oracle explainers on the synthetic source: how much CAN a metric reward reading the history's order?
Each policy writes, for every record of a split, the synthetic reference template citing the history event it
picks, so a metric is measured on perfect explanations before any model is trained: where the order-free
oracles score as well as the reference, no sequence-aware model can be expected to beat an order-free one on
that metric (docs/evaluation.md, "Headroom for order", lists the policies and the command).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from seller_dist import storage
from seller_dist.config import EvalConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ExampleRecord
from seller_dist.data.shards import Manifest
from seller_dist.data.synthetic_reference import (
    PreparedItems,
    TemplateCatalog,
    TemplateEvent,
    explanation_citing,
    most_recent_related,
    relation_to,
)
from seller_dist.eval.generations import Generation, SupportingEvent

# policy -> (history, target, catalog, rng) -> index of the cited history event (-1: none)
Picker = Callable[[Sequence[TemplateEvent], TemplateEvent, TemplateCatalog, random.Random], int]


def _related(history: Sequence[TemplateEvent], target: TemplateEvent, catalog: TemplateCatalog) -> list[int]:
    return [i for i, e in enumerate(history) if relation_to(e, target, catalog) != "none"]


def _max_match(
    history: Sequence[TemplateEvent], target: TemplateEvent, catalog: TemplateCatalog, rng: random.Random
) -> int:
    related = _related(history, target, catalog)
    if not related:
        return -1
    tattrs = catalog[target.item_id].attributes

    def score(i: int) -> int:
        a = catalog[history[i].item_id].attributes
        return 100 * (history[i].item_id == target.item_id) + sum(a.get(k) == v for k, v in tattrs.items())

    best = max(score(i) for i in related)
    return rng.choice([i for i in related if score(i) == best])


POLICIES: dict[str, Picker] = {
    "reference": lambda h, t, c, rng: most_recent_related(h, t, c)[0],
    "random_related": lambda h, t, c, rng: rng.choice(r) if (r := _related(h, t, c)) else -1,
    "max_match": _max_match,
    "oldest_related": lambda h, t, c, rng: r[0] if (r := _related(h, t, c)) else -1,
    "no_history": lambda h, t, c, rng: -1,
}


def oracle_generations(
    records: Sequence[ExampleRecord], catalog: TemplateCatalog, policy: str, seed: int = 0
) -> list[Generation]:
    """One Generation per record whose text is the synthetic template citing the policy's pick. Its
    one supporting event is that pick (weight 1), so attention_top_is_cited scores the pick itself."""
    if policy not in POLICIES:
        raise ValueError(f"unknown oracle policy '{policy}': choose from {sorted(POLICIES)}")
    pick = POLICIES[policy]
    out = []
    for r in records:
        history, target = r.history, r  # the template reads item_id, timestamp, action of each
        rng = random.Random(seed * 1_000_003 + zlib.crc32(r.key.encode()))
        i = pick(history, target, catalog, rng)
        text, meta = explanation_citing(history, target, catalog, i)
        if policy == "reference" and text != r.explanation:
            raise ValueError(
                f"record {r.key}: the synthetic template does not reproduce its reference explanation "
                f"(field 'explanation'): the dataset was not prepared by this version of the synthetic "
                f"source\n  record:   {r.explanation!r}\n  template: {text!r}"
            )
        events = []
        if i >= 0:
            e = r.history[i]
            events = [SupportingEvent(meta["cited_offset"], e.item_id, e.title, 1.0)]
        out.append(
            Generation(
                r.key,
                r.user_id,
                r.item_id,
                r.explanation,
                text,
                events,
                r.meta,
                f"oracle-{policy}",
                r.explanation_source,
            )
        )
    return out


def run_oracles(
    cfg: EvalConfig, out: str, policies: Sequence[str], seed: int = 0, encoder: Any = None
) -> dict[str, dict[str, Any]]:
    """Write and score each policy's generations under out/oracle-<policy> (the first cfg.limit records
    of the split when it is set, as the eval job does); returns the results by policy."""
    from seller_dist.eval.generations import write_generations
    from seller_dist.eval.report import write_report
    from seller_dist.eval.scoring import load_split, score_generations, text_encoder

    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown oracle policies {unknown}: choose from {sorted(POLICIES)}")
    manifest = Manifest.load(cfg.data, cfg.storage)
    source = (manifest.data.get("source") or {}).get("name")
    if source != "synthetic":
        raise ValueError(
            f"{manifest.root}: oracles need the synthetic source's template; this dataset was prepared "
            f"from source '{source}'"
        )
    records = load_split(manifest, cfg.split, cfg, limit=cfg.limit or None)
    catalog = PreparedItems.from_catalog(ItemCatalog.load(manifest.root, manifest, cfg.storage))
    encoder = encoder or text_encoder(cfg)
    results = {}
    for policy in policies:
        url = storage.join(out, f"oracle-{policy}", "generations.jsonl")
        write_generations(url, oracle_generations(records, catalog, policy, seed), cfg.storage)
        results[policy] = score_generations(url, cfg.data, cfg, encoder=encoder)
        write_report(results[policy], storage.join(out, f"oracle-{policy}"), storage_cfg=cfg.storage)
    return results


def oracles_artifact(cfg: EvalConfig, out: str, policies: Sequence[str], seed: int) -> dict[str, Any]:
    """What docs/evaluation.md's oracle table is generated from (tools.doc_tables, kind
    `oracles`): each policy's report beside the dataset's identity and the run's provenance."""
    from seller_dist.eval.report import load_run
    from seller_dist.version import provenance

    manifest = Manifest.load(cfg.data, cfg.storage)
    return {
        "provenance": provenance(),
        "dataset_manifest_sha256": manifest.sha256(),
        "split": cfg.split,
        "limit": cfg.limit,
        "seed": seed,
        "runs": [
            {"label": f"oracle-{p}", "report": load_run(storage.join(out, f"oracle-{p}"))} for p in policies
        ],
    }
