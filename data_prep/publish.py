"""The phases of a prep that both engines share: cutting users into examples and writing them to
split shards (`CutPhase`), the item catalog shards (`write_items`), then prep_report.json and
manifest.json LAST (`finish_manifest`): the one publishing code, whichever engine read the input.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from data_prep.examples import Catalog, CutParams, Explainer, cut_and_report
from data_prep.sources import Source
from data_prep.sources.base import RawEvent
from data_prep.splits import split_rule
from data_prep.vocab import ParentVocab, lineage_entry
from seller_dist import storage
from seller_dist.config import PrepConfig
from seller_dist.data import shards
from seller_dist.data.bad_records import BadRecordReport, OrderedSamples
from seller_dist.data.schema import ACTIONS, SPLITS, ExampleRecord, ItemRecord
from seller_dist.version import code_version

log = logging.getLogger(__name__)

REPORT_NAME = "prep_report.json"


def cut_params(cfg: PrepConfig, source: Source) -> CutParams:
    return CutParams(
        cfg.max_history,
        cfg.min_history,
        cfg.examples_per_user,
        source.templated,
        source.text_kind,
        cfg.split,
        cfg.split_cutoff_seconds(),
        source.text_optional,
    )


def explainer_of(source: Source) -> Explainer | None:
    fn = getattr(source, "explainer", None)
    return fn() if callable(fn) else None


def dataset_vocab(catalog: Catalog, num_users: int, max_history: int) -> dict[str, Any]:
    fields: dict[str, set[str]] = defaultdict(set)
    for it in catalog.items.values():
        for k, v in it.attributes.items():
            fields[k].add(v)
    return {
        "num_items": len(catalog),
        "num_users": num_users,
        "attribute_fields": {k: sorted(v) for k, v in sorted(fields.items())},
        "actions": list(ACTIONS),
        "max_history": max_history,
    }


def write_items(root: str, catalog: Catalog, cfg: PrepConfig) -> dict[str, Any]:
    """Item catalog shards (keys "i<item_idx:09d>", WebDataset-safe whatever the item ids look like)."""
    ordered = sorted(catalog.items.values(), key=lambda it: it.item_idx)
    vectors = None
    dim = 0
    if cfg.embed_item_text:
        from seller_dist.data.sentence_embeddings import embed_texts, item_text, npy_bytes

        texts = [item_text(it.title, it.text, it.item_id) for it in ordered]
        log.info("embedding %d item texts with all-MiniLM-L6-v2", len(texts))
        vectors = embed_texts(texts, cfg.embed_batch_size)
        dim = int(vectors.shape[1]) if len(texts) else 0
    writer = shards.ShardWriter(root, "items", cfg.shard_max_records, cfg.shard_max_bytes, cfg.storage)
    for n, it in enumerate(tqdm(ordered, desc="items", unit="item", disable=len(ordered) < 10_000)):
        rec = ItemRecord(it.item_id, it.item_idx, it.title, dict(it.attributes), it.text, vectors is not None)
        sample: dict[str, Any] = {"__key__": f"i{it.item_idx:09d}", "json": rec.to_json()}
        if vectors is not None:
            sample["emb.npy"] = npy_bytes(vectors[n])
        writer.write(sample)
    infos = writer.close()
    return {"count": len(ordered), "shards": [asdict(s) for s in infos], "embedding_dim": dim}


@dataclass
class ExampleStats:
    """Counts gathered while writing (history lengths, explanation sources) for the manifest."""

    per_split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    history_len_sum: int = 0
    history_len_max: int = 0
    explanation_sources: dict[str, int] = field(default_factory=dict)
    users_with_examples: int = 0
    # split=source: valid/test events that got no example (fewer than min_history earlier events)
    held_out_without_history: dict[str, int] = field(default_factory=dict)

    def add(self, rec: ExampleRecord) -> None:
        self.per_split[rec.split] += 1
        self.history_len_sum += len(rec.history)
        self.history_len_max = max(self.history_len_max, len(rec.history))
        self.explanation_sources[rec.explanation_source] = (
            self.explanation_sources.get(rec.explanation_source, 0) + 1
        )

    def merge(self, other: ExampleStats) -> None:
        for k, v in other.per_split.items():
            self.per_split[k] += v
        self.history_len_sum += other.history_len_sum
        self.history_len_max = max(self.history_len_max, other.history_len_max)
        for k, v in other.explanation_sources.items():
            self.explanation_sources[k] = self.explanation_sources.get(k, 0) + v
        self.users_with_examples += other.users_with_examples
        for k, v in other.held_out_without_history.items():
            self.held_out_without_history[k] = self.held_out_without_history.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        total = sum(self.per_split.values())
        return {
            "examples": dict(self.per_split),
            "history_len_mean": round(self.history_len_sum / max(1, total), 4),
            "history_len_max": self.history_len_max,
            "explanation_sources": dict(sorted(self.explanation_sources.items())),
            "users_with_examples": self.users_with_examples,
            **(
                {"held_out_without_history": dict(sorted(self.held_out_without_history.items()))}
                if self.held_out_without_history
                else {}
            ),
        }


class SplitWriters:
    """One bounded ShardWriter per split (at most one in-memory shard per split at a time)."""

    def __init__(self, root: str, cfg: PrepConfig, prefix: str = "shard"):
        self.writers = {
            s: shards.ShardWriter(
                root, s, cfg.shard_max_records, cfg.shard_max_bytes, cfg.storage, prefix=prefix
            )
            for s in SPLITS
        }
        self.stats = ExampleStats()

    def write_user(self, records: list[tuple[ExampleRecord, bytes]]) -> None:
        """One user's (record, payload) pairs (data_prep.examples.cut_user_payloads)."""
        if records:
            self.stats.users_with_examples += 1
        for rec, payload in records:
            self.writers[rec.split].write({"__key__": rec.key, "json": payload})
            self.stats.add(rec)

    def close(self) -> dict[str, list[shards.ShardInfo]]:
        return {s: w.close() for s, w in self.writers.items()}


def finish_manifest(
    root: str,
    cfg: PrepConfig,
    source: Source,
    split_infos: dict[str, list[shards.ShardInfo | dict]],
    items_entry: dict[str, Any],
    catalog: Catalog,
    num_users: int,
    stats: dict[str, Any],
    report: BadRecordReport,
    parent: ParentVocab | None = None,
) -> dict[str, Any]:
    """prep_report.json, then manifest.json LAST (the publish marker)."""
    manifest = shards.new_manifest(source.describe(), code_version())
    for split in SPLITS:
        infos = sorted(
            (i if isinstance(i, dict) else asdict(i) for i in split_infos.get(split, [])),
            key=lambda d: d["path"],
        )
        manifest["splits"][split] = {"count": sum(i["count"] for i in infos), "shards": infos}
    manifest["items"] = items_entry
    manifest["vocab"] = dataset_vocab(catalog, num_users, cfg.max_history)
    manifest["templated"] = source.templated
    if parent is not None:
        manifest["lineage"] = lineage_entry(parent)
    manifest["prep"] = {
        "engine": cfg.engine,
        "max_history": cfg.max_history,
        "min_history": cfg.min_history,
        "examples_per_user": cfg.examples_per_user,
        **({"max_users": cfg.max_users, "max_users_seed": cfg.max_users_seed} if cfg.max_users else {}),
        "split": cfg.split,
        "split_rule": split_rule(cfg.split, source.name, cfg.split_column, cfg.split_cutoffs),
        **({"split_column": cfg.split_column} if cfg.split_column else {}),
        **({"split_cutoffs": list(cfg.split_cutoff_seconds() or ())} if cfg.split_cutoffs else {}),
    }
    manifest["stats"] = {
        **stats,
        "items_without_metadata": sum(1 for it in catalog.items.values() if not it.has_metadata),
        "input_records": report.total_seen,
        "bad_records": report.total_bad,
    }
    if report.damaged:  # files the user accepted as damaged, and what of each could not be read
        manifest["damaged_inputs"] = report.damaged
    storage.write_json(
        storage.join(root, REPORT_NAME),
        {**report.to_dict(), "counts_in": report.total_seen, "counts_out": stats.get("examples", {})},
        cfg.storage,
    )
    shards.write_manifest(root, manifest, cfg.storage)
    return manifest


class CutPhase:
    """Writes users' examples as they are cut; counts their bad records; checks the error rate."""

    def __init__(
        self,
        root: str,
        cfg: PrepConfig,
        report: BadRecordReport,
        catalog: Catalog,
        source: Source,
        prefix: str = "shard",
    ):
        self.cfg, self.report, self.catalog = cfg, report, catalog
        self.params = cut_params(cfg, source)
        self.explain = explainer_of(source)
        self.writers = SplitWriters(root, cfg, prefix)
        self.samples = OrderedSamples(cfg.bad_record_samples)
        self.num_users = 0
        if self.params.split == "source":
            self.writers.stats.held_out_without_history = {"test": 0, "valid": 0}

    def user(self, uid: str, evs: list[RawEvent], check: bool = True) -> None:
        dropped = self.writers.stats.held_out_without_history if self.params.split == "source" else None
        recs, user_report = cut_and_report(
            uid, evs, self.catalog, self.params, self.explain, self.cfg.bad_record_samples, dropped
        )
        self.samples.add_report(uid, user_report, self.report)
        self.writers.write_user(recs)
        self.num_users += 1
        if check and self.num_users % 20_000 == 0:
            self.check()

    def check(self) -> None:
        if self.report.total_bad and self.report.error_rate > self.cfg.max_error_rate:
            self.samples.finish(self.report)
        self.report.check(self.cfg.max_error_rate)

    def close(self) -> dict[str, list[shards.ShardInfo]]:
        self.samples.finish(self.report)
        self.report.check(self.cfg.max_error_rate)
        return self.writers.close()
