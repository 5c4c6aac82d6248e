"""Score one generations file against the prepared dataset: text quality, grounding, utility.
`score_generations(generations_url, dataset_root, cfg)` is what the eval job calls after gathering and what
anyone can call later on a saved file: it needs only the JSONL, the dataset's manifest, item catalog and
splits, and the offline sentence encoder, and scores in key order, so the numbers do not depend on how many
workers generated them; text and grounding also per reference kind (seller_dist.eval.references).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from seller_dist.config import EvalConfig
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ExampleRecord
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import shard_records
from seller_dist.eval import grounding as grounding_mod
from seller_dist.eval import references as reference_kinds
from seller_dist.eval import simulator, text_metrics, utility
from seller_dist.eval.generations import Generation, GenerationsError, read_generations

log = logging.getLogger(__name__)


def load_split(
    manifest: Manifest, split: str, cfg: EvalConfig, limit: int | None = None
) -> list[ExampleRecord]:
    """The records of one split in shard order (sha256-checked shards, validated records); with
    `limit`, only the first `limit` (shards past it are not read)."""
    out: list[ExampleRecord] = []
    for info in manifest.shards(split):
        if limit is not None and len(out) >= limit:
            break
        out += shard_records(manifest, info, cfg.storage)
    return out[:limit] if limit is not None else out


def align(gens: Sequence[Generation], records: Sequence[ExampleRecord], where: str) -> list[ExampleRecord]:
    by_key = {r.key: r for r in records}
    out = []
    for g in gens:
        r = by_key.get(g.key)
        if r is None:
            raise GenerationsError(where, None, "key", f"'{g.key}' is not a record of the scored split")
        if g.reference_source and g.reference_source != r.explanation_source:
            raise GenerationsError(
                where,
                None,
                "reference_source",
                f"'{g.key}' says its reference is '{g.reference_source}', the record's "
                f"explanation_source is '{r.explanation_source}' (generated from another dataset?)",
            )
        if r.item_id != g.item_id or r.user_id != g.user_id:
            raise GenerationsError(
                where,
                None,
                "item_id",
                f"'{g.key}' names user {g.user_id} / item {g.item_id}, the record has "
                f"{r.user_id} / {r.item_id}",
            )
        out.append(r)
    return out


def attention_example(gens: Sequence[Generation], records: Sequence[ExampleRecord]) -> dict[str, Any] | None:
    """The first example (key order) with supporting events, for the attention plot."""
    for g, r in zip(gens, records, strict=True):
        if not g.supporting_events:
            continue
        weight = {e.offset: e.weight for e in g.supporting_events}
        n = len(r.history)
        return {
            "key": g.key,
            "item_title": r.item_title,
            "generated": g.generated,
            "cited_offset": r.meta.get("cited_offset"),
            "events": [
                {
                    "offset": n - 1 - i,
                    "title": h.title or h.item_id,
                    "action": h.action,
                    "weight": weight.get(n - 1 - i, 0.0),
                }
                for i, h in enumerate(r.history)
            ],
        }
    return None


def text_encoder(cfg: EvalConfig) -> Any:
    """The sentence encoder every text-embedding metric uses (cfg.encoder_path on cfg.encoder_device)."""
    from seller_dist.eval.encoder import TextEncoder

    device = cfg.encoder_device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TextEncoder(cfg.encoder_path, device)


def text_quality(
    generated: Sequence[str],
    references: Sequence[str],
    cfg: EvalConfig,
    encoder: Any,
    aspects: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """text_metrics.text_quality with the eval config's text options (BERTScore when text.bertscore)."""
    t = cfg.text
    return text_metrics.text_quality(
        generated,
        references,
        aspects,
        encoder if t.bertscore else None,
        t.bertscore_layer,
        t.batch_size,
        t.max_length,
        t.bootstrap_samples,
        t.bootstrap_seed,
    )


def text_and_grounding(
    gens: Sequence[Generation],
    records: Sequence[ExampleRecord],
    cfg: EvalConfig,
    encoder: Any,
    with_aspects: bool,
) -> dict[str, Any]:
    """Every text metric and every grounding metric of these examples (aligned gens and records)."""
    return {
        "text": text_quality(
            [g.generated for g in gens],
            [g.reference for g in gens],
            cfg,
            encoder,
            [r.aspects for r in records] if with_aspects else None,
        ),
        "grounding": grounding_mod.grounding(gens, records),
    }


def by_reference_group(
    gens: Sequence[Generation],
    records: Sequence[ExampleRecord],
    cfg: EvalConfig,
    encoder: Any,
    with_aspects: bool,
    overall: dict[str, Any],
) -> dict[str, Any]:
    """Text and grounding per reference group (real first): each group scored alone, exactly as a
    file holding only that group's examples would be. `overall` (the scores of all examples) is
    reused for a group that holds every example. With eval.references=real|template, only that group."""
    out: dict[str, Any] = {}
    for group, idx in reference_kinds.indices_by_group(records).items():
        if cfg.references != "all" and group != cfg.references:
            continue
        entry: dict[str, Any] = {"num_examples": len(idx)}
        if len(idx) == len(records):
            entry.update(overall)
        elif idx:
            entry.update(
                text_and_grounding(
                    [gens[i] for i in idx], [records[i] for i in idx], cfg, encoder, with_aspects
                )
            )
        out[group] = entry
    return out


def score_generations(
    generations_url: str, dataset_root: str, cfg: EvalConfig | None = None, encoder: Any = None
) -> dict[str, Any]:
    """All metrics of one generations file (the results dict that report.write_report renders)."""
    cfg = replace(cfg or EvalConfig(), data=dataset_root)
    manifest = Manifest.load(dataset_root, cfg.storage)
    if cfg.split not in manifest.data.get("splits", {}) or manifest.count(cfg.split) == 0:
        raise ValueError(
            f"{manifest.root}: the manifest has no '{cfg.split}' split to score (has "
            f"{sorted(k for k, v in manifest.data.get('splits', {}).items() if v.get('count'))})"
        )
    bad = BadRecordReport()
    gens = sorted(
        read_generations(generations_url, cfg.storage, cfg.max_error_rate, bad), key=lambda g: g.key
    )
    systems = sorted({g.system for g in gens})
    if len(systems) != 1:
        raise GenerationsError(
            generations_url, None, "system", f"one system per file expected, found {systems}"
        )
    records = align(gens, load_split(manifest, cfg.split, cfg), generations_url)
    in_file = reference_kinds.counts(records)
    if cfg.references != "all":
        reference_kinds.check_not_empty(
            cfg.references, records, f"{generations_url} (split '{cfg.split}' of {manifest.root})"
        )
        kept = [i for i, r in enumerate(records) if reference_kinds.keep(cfg.references, r)]
        gens, records = [gens[i] for i in kept], [records[i] for i in kept]
    catalog = ItemCatalog.load(manifest.root, manifest, cfg.storage)
    encoder = encoder or text_encoder(cfg)
    generated = [g.generated for g in gens]
    references = [g.reference for g in gens]
    has_aspects = any(r.aspects for r in records)
    log.info("scoring %d generations of system '%s' (references: %s)", len(gens), systems[0], cfg.references)
    overall = text_and_grounding(gens, records, cfg, encoder, has_aspects)
    results: dict[str, Any] = {
        "system": systems[0],
        "generations": generations_url,
        "data": manifest.root,
        "split": cfg.split,
        "num_examples": len(gens),
        "config": asdict(cfg),
        "bad_generations": bad.to_dict(),
        "references": {
            "mode": cfg.references,
            "examples": reference_kinds.counts(records),
            "explanation_sources": reference_kinds.source_counts(records),
            "in_generations_file": in_file,
        },
        "by_reference": by_reference_group(gens, records, cfg, encoder, has_aspects, overall),
        **overall,
    }
    rc = cfg.retrieval
    explanations = {
        "generated": generated,
        "reference": references,
        "generic": [rc.generic_explanation] * len(gens),
    }
    item_vecs = utility.item_vectors(catalog, encoder, rc.batch_size)
    results["retrieval"] = utility.retrieval(
        explanations, records, catalog, encoder, rc.num_negatives, rc.seed, rc.batch_size, item_vecs
    )
    sim: dict[str, Any] = {}
    sc = cfg.simulator
    if sc.enabled:
        splits = manifest.data.get("splits", {})
        if not sc.learned:
            sim["learned_skipped"] = "simulator.learned=false"
        elif splits.get(sc.train_split, {}).get("count", 0) > 0:
            sim_records = load_split(manifest, sc.train_split, cfg, limit=sc.max_train_examples)
            sim["learned"] = simulator.learned_simulation(
                sim_records,
                records,
                explanations,
                item_vecs,
                encoder,
                rc.generic_explanation,
                sc,
                rc.batch_size,
            )
        else:
            sim["learned_skipped"] = f"the dataset has no '{sc.train_split}' split to train the simulator on"
        categories = (manifest.data.get("source") or {}).get("categories")
        if sc.exact and categories and all(isinstance(r.meta.get("taste"), list) for r in records):
            sim["exact"] = simulator.exact_simulation(records, explanations, catalog, categories)
    results["simulator"] = sim
    ex = attention_example(gens, records)
    if ex is not None:
        results["attention_example"] = ex
    return results
