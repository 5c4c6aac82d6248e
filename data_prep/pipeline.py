"""`seller-dist prep`: raw logs -> validated WebDataset shards + item catalog + manifest (local engine;
engine=ray runs data_prep.ray_pipeline), in an order chosen so a failed run never publishes anything: a
published output is refused unless overwrite, a non-streaming source is parsed in full and checked against
max_error_rate before any shard is written, manifest.json is written LAST, and on any failure everything
written under the output is deleted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

import seller_dist
from data_prep.examples import Catalog, UserSample
from data_prep.partitions import (
    PartitionSpill,
    SpilledPartition,
    events_by_user,
    iter_partition_batches,
    read_partition,
    seq_of,
)
from data_prep.publish import REPORT_NAME, CutPhase, finish_manifest, write_items
from data_prep.ray_pipeline import run_ray
from data_prep.sources import Source, get_source
from data_prep.sources.base import RawEvent
from data_prep.vocab import ParentVocab, load_parent
from seller_dist import storage
from seller_dist.config import PrepConfig
from seller_dist.data import shards
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import SPLITS
from seller_dist.errors import UserError

log = logging.getLogger(__name__)

OUTPUT_PARTS = (*SPLITS, "items", REPORT_NAME)  # what prep writes under the output (and may delete)
DEFAULT_CONFIG = Path(seller_dist.__file__).resolve().parent / "configs" / "prep_synthetic.yaml"
EARLY_CHECK_EVERY = 50_000  # re-check the error rate every this many input records
MAX_RESPLIT_DEPTH = 4  # a partition still over partition_max_events after this is one user's events


class PrepError(UserError, RuntimeError):
    """A prep run that cannot start or finish; the message says what to change."""


# -------------------------------------------------------------------------------------- helpers
def source_options(cfg: PrepConfig) -> dict[str, Any]:
    """Options handed to the source; the generic events source also gets the column mapping."""
    opts = dict(cfg.source_options)
    if cfg.source == "events":
        opts.setdefault("columns", asdict(cfg.events_columns))
    if cfg.split == "source" and cfg.split_column:
        opts["split_column"] = cfg.split_column  # the source tags each event with its split
    return opts


def prepare_output(cfg: PrepConfig) -> str:
    """Refuse to clobber a published dataset; clear leftovers of a failed run (only prep's own parts)."""
    root = cfg.output.rstrip("/")
    manifest_url = storage.join(root, shards.MANIFEST_NAME)
    if storage.exists(manifest_url, cfg.storage):
        if not cfg.overwrite:
            raise PrepError(
                f"output {root} already holds a prepared dataset ({shards.MANIFEST_NAME} exists); "
                "set overwrite=true (--set overwrite=true) to replace it, or choose another output"
            )
        storage.remove(manifest_url, cfg.storage, recursive=False)  # unpublish first
    cleanup_output(root, cfg)
    return root


def cleanup_output(root: str, cfg: PrepConfig) -> None:
    for part in OUTPUT_PARTS:
        storage.remove(storage.join(root, part), cfg.storage)


# -------------------------------------------------------------------------------------- engines
def _check_early(report: BadRecordReport, cfg: PrepConfig, last_checked: list[int]) -> None:
    if report.total_seen - last_checked[0] >= EARLY_CHECK_EVERY:
        last_checked[0] = report.total_seen
        report.check(cfg.max_error_rate)


def user_sample(cfg: PrepConfig) -> UserSample | None:
    """`max_users`: the subsample every event's user is fed to (None: every user is kept)."""
    return UserSample(cfg.max_users, cfg.max_users_seed) if cfg.max_users else None


def spill_events(
    source: Source,
    cfg: PrepConfig,
    spill: PartitionSpill,
    report: BadRecordReport,
    sample: UserSample | None = None,
) -> set[str]:
    """Every event of every part into the user-hash partitions; returns the item ids seen. With a
    `sample` (max_users), every event's user is added to it."""
    item_ids: set[str] = set()
    text_pairs: set[tuple[str, str]] | None = set() if source.wants_text_pairs else None
    last_checked = [0]
    for part in tqdm(
        source.event_parts(cfg.read_part_bytes), desc="read events", unit="part", mininterval=5, disable=None
    ):
        for pos, ev in enumerate(source.read_events(part)):
            spill.add(ev, seq_of(part.index, pos))
            item_ids.add(ev.item_id)
            if sample is not None:
                sample.add(ev.user_id)
            if text_pairs is not None and ev.text is not None:
                text_pairs.add((ev.user_id, ev.item_id))
        _check_early(report, cfg, last_checked)
    if text_pairs is not None:
        source.after_events(text_pairs)
    return item_ids


def spill_buffer_rows(cfg: PrepConfig) -> int:
    """Rows the spill holds in memory across all partitions: no more than one partition's worth."""
    return min(131_072, cfg.partition_max_events)


def users_of_partitions(
    parts: list[SpilledPartition], cfg: PrepConfig, directory: str, depth: int = 0
) -> Iterator[tuple[str, list[RawEvent]]]:
    """(user, events in input order) partition by partition; an oversized partition is split again."""
    for sp in parts:
        if sp.rows > cfg.partition_max_events and depth < MAX_RESPLIT_DEPTH:
            k = 2 * -(-sp.rows // cfg.partition_max_events)
            sub = PartitionSpill(
                os.path.join(directory, f"d{depth + 1}"),
                k,
                salt=sp.salt + 1,
                buffer_rows=spill_buffer_rows(cfg),
            )
            for cols in iter_partition_batches(sp):
                sub.add_columns(cols, range(len(cols["seq"])))
            os.remove(sp.path)
            yield from users_of_partitions(sub.close(), cfg, directory, depth + 1)
            continue
        by_user = events_by_user(read_partition(sp))
        os.remove(sp.path)
        for uid in sorted(by_user):
            yield uid, by_user.pop(uid)


def _run_local(
    root: str, cfg: PrepConfig, source: Source, report: BadRecordReport, parent: ParentVocab | None = None
) -> dict[str, Any]:
    raw_items = [it for part in source.item_parts(cfg.read_part_bytes) for it in source.read_items(part)]
    streamed = source.events_by_user()
    if streamed is None:
        # Parse every part into user-hash partitions on local disk (flat memory), check the parse's
        # error rate before a single shard is written, then cut one partition at a time.
        with tempfile.TemporaryDirectory(prefix="seller-prep-", dir=cfg.spill_dir) as tmp:
            spill = PartitionSpill(tmp, cfg.spill_partitions, buffer_rows=spill_buffer_rows(cfg))
            sample = user_sample(cfg)
            item_ids = spill_events(source, cfg, spill, report, sample)
            keep = sample.kept() if sample is not None else None  # max_users: cut only these users
            parts = spill.close()
            report.check(cfg.max_error_rate)
            catalog = Catalog.build(raw_items, item_ids, parent)
            del item_ids
            phase = CutPhase(root, cfg, report, catalog, source)
            for uid, evs in tqdm(
                users_of_partitions(parts, cfg, tmp),
                desc="cut examples",
                unit="user",
                mininterval=5,
                disable=None,
            ):
                if keep is None or uid in keep:
                    phase.user(uid, evs)
    else:
        # Streaming (synthetic): the catalog is the source's item list; one user in memory at a time.
        catalog = Catalog.build(raw_items, parent=parent)
        phase = CutPhase(root, cfg, report, catalog, source)
        last_checked = [0]
        for uid, evs in tqdm(streamed, desc="users", unit="user", mininterval=5, disable=None):
            phase.user(uid, evs)
            _check_early(report, cfg, last_checked)
    split_infos = phase.close()
    items_entry = write_items(root, catalog, cfg)
    stats = phase.writers.stats.to_dict()
    return finish_manifest(
        root, cfg, source, split_infos, items_entry, catalog, phase.num_users, stats, report, parent
    )


def run_prep(cfg: PrepConfig) -> dict[str, Any]:
    """Convert the configured source into a published dataset at cfg.output; returns the manifest."""
    report = BadRecordReport(
        max_samples=cfg.bad_record_samples, allow_damaged=tuple(cfg.allow_damaged_inputs)
    )
    # the source checks its options first: a typo must not unpublish an existing dataset
    source = get_source(cfg.source, cfg.inputs, source_options(cfg), report)
    source.storage_cfg = cfg.storage
    # a bad vocab_from fails before the output is touched
    parent = load_parent(cfg.vocab_from, cfg.storage) if cfg.vocab_from else None
    root = prepare_output(cfg)
    try:
        if cfg.engine == "ray":
            manifest = run_ray(root, cfg, source, report, parent)
        else:
            manifest = _run_local(root, cfg, source, report, parent)
    except BaseException:
        log.debug("prep failed: removing everything written under %s (no manifest was published)", root)
        cleanup_output(root, cfg)
        raise
    counts = {s: manifest["splits"][s]["count"] for s in SPLITS}
    log.info(
        "published %s: %s examples, %d items, %d bad of %d input records",
        root,
        counts,
        manifest["items"]["count"],
        report.total_bad,
        report.total_seen,
    )
    return manifest
