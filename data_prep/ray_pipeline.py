"""engine=ray: the prep conversion as a Ray Data job, giving the same records as the local engine with no task
holding more than about `partition_max_events` events: one task per read part runs the source's own parser,
a hash shuffle on user_id brings each user's events to one partition, each partition runs the local
engine's cut phase (data_prep.publish.CutPhase) and writes its shards, and the driver, which never holds
an event, checks the error rate and writes items, prep_report.json and manifest.json last (docs/data.md,
"Engines").
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_prep.examples import Catalog, UserSample
from data_prep.partitions import SCHEMA, append_event, empty_columns, events_by_user, seq_of
from data_prep.publish import CutPhase, ExampleStats, finish_manifest, write_items
from data_prep.sources import Source
from data_prep.sources.base import RawItem, ReadPart
from data_prep.vocab import ParentVocab
from seller_dist.config import PrepConfig
from seller_dist.data.bad_records import BadRecordReport, OrderedSamples
from seller_dist.data.schema import SPLITS

log = logging.getLogger(__name__)

ROWS_PER_BLOCK = 50_000  # a parse task yields its events in blocks of at most this many rows
USERS_PER_BLOCK = 2_000  # synthetic users generated per task
PARTITIONS_PER_CPU = 8

EVENT_SCHEMA = SCHEMA.append(pa.field("kind", pa.string())).append(pa.field("report", pa.string()))
ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("attributes", pa.string()),  # JSON object
        ("text", pa.string()),
        ("seq", pa.int64()),
        ("kind", pa.string()),
        ("report", pa.string()),
    ]
)


def _report_json(report: BadRecordReport, extra: dict | None = None) -> str:
    return json.dumps(
        {
            "seen": report.seen,
            "bad": report.bad,
            "samples": report.samples,
            "damaged": report.damaged,
            **(extra or {}),
        }
    )


def _report_from_dict(d: dict[str, Any], max_samples: int) -> BadRecordReport:
    rep = BadRecordReport(max_samples=max_samples)
    rep.seen.update(d["seen"])
    rep.bad.update(d["bad"])
    rep.samples = d["samples"]
    rep.damaged = d.get("damaged", [])
    return rep


def _report_table(
    schema: pa.Schema, part: ReadPart, report: BadRecordReport, extra: dict | None = None
) -> pa.Table:
    row = {name: [None] for name in schema.names}
    row.update(seq=[seq_of(part.index, 0)], kind=["report"], report=[_report_json(report, extra)])
    return pa.table(row, schema=schema)


# Not ray.data.read_csv/read_json: they type cells on their own terms (user id "007" -> 7; a malformed row
# dropped, or the file failed without a line number), so records and bad-record counts would differ from
# the local engine's. Parse tasks run the source's own parser, as the local engine does.
def parse_event_parts(
    batch: dict[str, np.ndarray],
    source: Source,
    parts: list[ReadPart],
    max_users: tuple[int, int] | None = None,
    block_rows: int = ROWS_PER_BLOCK,
) -> Iterator[pa.Table]:
    """map_batches UDF: part indices -> that part's events (blocks of at most `block_rows` rows) and
    its report row, which carries the events' count and Arrow bytes. With `max_users` (n, seed) the
    report row also carries the part's n first users in the subsample order
    (data_prep.examples.UserSample), from which the driver picks the run's n."""
    for p in batch["part"]:
        part = parts[int(p)]
        src = copy.copy(source)
        src.report = source.report.empty_like()
        cols = empty_columns()
        item_ids: set[str] = set()
        text_pairs: set[tuple[str, str]] = set()
        sample = UserSample(*max_users) if max_users else None
        n = nbytes = 0
        for n, ev in enumerate(src.read_events(part), 1):
            append_event(cols, ev, seq_of(part.index, n - 1))
            item_ids.add(ev.item_id)
            if sample is not None:
                sample.add(ev.user_id)
            if source.wants_text_pairs and ev.text is not None:
                text_pairs.add((ev.user_id, ev.item_id))
            if len(cols["seq"]) >= block_rows:
                table = _event_table(cols)
                nbytes += table.nbytes
                yield table
                cols = empty_columns()
        if cols["seq"]:
            table = _event_table(cols)
            nbytes += table.nbytes
            yield table
        # what the driver needs of the events (the catalog's item ids, the count, their size) rides
        # on the report
        extra = {"events": n, "event_bytes": nbytes, "item_ids": sorted(item_ids),
                 "text_pairs": sorted(text_pairs)}  # fmt: skip
        if sample is not None:
            extra["users"] = sorted(sample.kept())
        yield _report_table(EVENT_SCHEMA, part, src.report, extra)


def _event_table(cols: dict[str, list]) -> pa.Table:
    n = len(cols["seq"])
    return pa.table({**cols, "kind": ["event"] * n, "report": [None] * n}, schema=EVENT_SCHEMA)


def parse_item_parts(
    batch: dict[str, np.ndarray], source: Source, parts: list[ReadPart]
) -> Iterator[pa.Table]:
    """map_batches UDF: part indices -> that part's catalog rows and its report row."""
    for p in batch["part"]:
        part = parts[int(p)]
        src = copy.copy(source)
        src.report = source.report.empty_like()
        rows: dict[str, list] = {name: [] for name in ITEM_SCHEMA.names}
        for pos, it in enumerate(src.read_items(part)):
            rows["item_id"].append(it.item_id)
            rows["title"].append(it.title)
            rows["attributes"].append(json.dumps(it.attributes, sort_keys=True))
            rows["text"].append(it.text)
            rows["seq"].append(seq_of(part.index, pos))
            rows["kind"].append("item")
            rows["report"].append(None)
        yield pa.table(rows, schema=ITEM_SCHEMA)
        yield _report_table(ITEM_SCHEMA, part, src.report)


def _parts_dataset(n: int):
    import ray.data

    return ray.data.from_items([{"part": i} for i in range(n)], override_num_blocks=max(1, n))


def _merge_part_reports(
    rows: Iterable[dict[str, Any]], report: BadRecordReport, max_samples: int
) -> dict[str, Any]:
    """Part reports merged in part order: the same counts and samples as one report read part after
    part. Streams the rows: the item ids and text pairs the parts saw are merged into sets as they
    come (bounded by the catalog, not by the number of parts); returns those and the event count."""
    parts: list[tuple[int, BadRecordReport]] = []
    merged: dict[str, Any] = {
        "item_ids": set(),
        "text_pairs": set(),
        "events": 0,
        "event_bytes": 0,
        "users": [],
    }
    for row in rows:
        d = json.loads(row["report"])
        merged["item_ids"].update(d.get("item_ids", ()))
        merged["users"].extend(d.get("users", ()))
        merged["text_pairs"].update(tuple(p) for p in d.get("text_pairs", ()))
        merged["events"] += d.get("events", 0)
        merged["event_bytes"] += d.get("event_bytes", 0)
        parts.append((int(row["seq"]), _report_from_dict(d, max_samples)))
    for _, part in sorted(parts, key=lambda t: t[0]):
        report.merge(part)
    return merged


def _parse_parts(
    udf, source: Source, parts: list[ReadPart], cfg: PrepConfig, report: BadRecordReport, *extra_args: Any
):
    """(materialized rows of one task per part, the parts' merged extras); their reports into `report`."""
    from ray.data.expressions import col

    args = (source, parts, *extra_args)
    rows = (
        _parts_dataset(len(parts))
        .map_batches(udf, fn_args=args, batch_size=1, batch_format="numpy")
        .materialize()
    )
    merged = _merge_part_reports(
        rows.filter(expr=col("kind") == "report").select_columns(["seq", "report"]).iter_rows(),
        report,
        cfg.bad_record_samples,
    )
    return rows, merged


def read_items_ray(source: Source, cfg: PrepConfig, report: BadRecordReport) -> list[RawItem]:
    """The catalog parsed by Ray tasks; the driver gets the items (bounded by the catalog, not the log)."""
    from ray.data.expressions import col

    parts = source.item_parts(cfg.read_part_bytes)
    if not parts:
        return []
    rows, _ = _parse_parts(parse_item_parts, source, parts, cfg, report)
    items = sorted(rows.filter(expr=col("kind") == "item").take_all(), key=lambda r: int(r["seq"]))
    return [RawItem(r["item_id"], r["title"], json.loads(r["attributes"]), r["text"]) for r in items]


def generate_and_cut(
    batch: dict[str, np.ndarray], source: Source, catalog: Catalog, root: str, cfg: PrepConfig
) -> dict[str, list]:
    """map_batches UDF (synthetic): a range of user indices -> those users' events (seeded per user),
    cut and written right here: a task holds whole users, so no shuffle is needed."""
    ids = [int(u) for u in batch["id"]]
    src = copy.copy(source)
    src.report = BadRecordReport(max_samples=cfg.bad_record_samples)
    users = src.events_for_users(min(ids), max(ids) + 1) if ids else iter(())
    return _cut_and_write(users, source, catalog, root, cfg, f"g{min(ids, default=0):09d}")


def keep_users(batch: pa.Table, keep: frozenset[str]) -> pa.Table:
    """map_batches UDF (max_users): only the events of the users in `keep`."""
    users = batch.column("user_id").to_pylist()
    return batch.filter(pa.array([u in keep for u in users], pa.bool_()))


def cut_block(
    block: pa.Table, source: Source, catalog: Catalog, root: str, cfg: PrepConfig
) -> dict[str, list]:
    """map_batches UDF on the shuffle's output: one block is one hash partition, every event of its
    users -> their shards + one summary row (none for an empty partition). The shards' prefix is a
    hash of the partition's smallest user id: distinct partitions hold distinct users."""
    if block.num_rows == 0:
        return {"summary": pa.array([], pa.string())}
    cols = block.to_pydict()  # Python lists: per-element access to numpy arrays is slower
    by_user = events_by_user(cols)
    del cols
    uids = sorted(by_user)
    prefix = "h" + hashlib.blake2b(uids[0].encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    users = ((uid, by_user.pop(uid)) for uid in uids)
    return _cut_and_write(users, source, catalog, root, cfg, prefix)


def cut_plan(n_events: int, event_bytes: int, n_cpus: int, cfg: PrepConfig) -> tuple[int, int]:
    """(partitions, shuffle map input bytes) of the cut. Partitions: at least PARTITIONS_PER_CPU
    per CPU (few large partitions leave CPUs idle: 1M events on 2 CPUs cut in 40 s with 4, 30 s with
    16) and events / partition_max_events, with no other cap. A shuffle map task takes blocks up to
    the bytes of partition_max_events events (Ray Data's default, 1 GiB, put a 4M-event log in ONE
    map task)."""
    partitions = max(PARTITIONS_PER_CPU * n_cpus, -(-n_events // cfg.partition_max_events))
    per_event = event_bytes / n_events if n_events else 0.0
    return partitions, max(1, int(cfg.partition_max_events * per_event))


def _cut_and_write(
    users: Iterator[tuple[str, list]],
    source: Source,
    catalog: Catalog,
    root: str,
    cfg: PrepConfig,
    prefix: str,
) -> dict[str, list]:
    """The local engine's cut phase (data_prep.publish.CutPhase) on these users, writing shards named
    `<split>/<prefix>-NNNNNN.tar`; one row: counts, shards, stats and the samples that may be among
    the run's first (OrderedSamples keeps the smallest user ids, whatever the task order)."""

    phase = CutPhase(root, cfg, BadRecordReport(max_samples=cfg.bad_record_samples), catalog, source, prefix)
    n_events = 0
    for uid, evs in users:
        phase.user(uid, evs, check=False)
        n_events += len(evs)
    infos = phase.writers.close()
    summary = {
        "users": phase.num_users,
        "events": n_events,
        "bad": dict(phase.report.bad),
        "samples": phase.samples.kept(),
        "stats": asdict(phase.writers.stats),
        "shards": {split: [asdict(i) for i in v] for split, v in infos.items()},
    }
    return {"summary": [json.dumps(summary)]}


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _ensure_ray(cfg: PrepConfig) -> bool:
    """Connect to cfg.ray_address or start a local Ray on 127.0.0.1; True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    from seller_dist.ray_cluster import init_ray

    project_root = str(Path(__file__).resolve().parent.parent)
    local = {"runtime_env": {"env_vars": {"PYTHONPATH": project_root, "OMP_NUM_THREADS": "1"}}}
    init_ray(cfg.ray_address, os.cpu_count() or 2, **({} if cfg.ray_address else local))
    return True


def parse_events_ray(source: Source, cfg: PrepConfig, report: BadRecordReport):
    """(events dataset, item ids seen, number of events, their Arrow bytes, the users to cut: None =
    all); the parse's bad records merged into `report`."""
    from ray.data.expressions import col

    max_users = (cfg.max_users, cfg.max_users_seed) if cfg.max_users else None
    block_rows = min(ROWS_PER_BLOCK, cfg.partition_max_events)
    parts = source.event_parts(cfg.read_part_bytes)
    parsed, merged = _parse_parts(parse_event_parts, source, parts, cfg, report, max_users, block_rows)
    if source.wants_text_pairs:
        source.after_events(merged["text_pairs"])
    events = parsed.filter(expr=col("kind") == "event").drop_columns(["kind", "report"])
    keep = None
    if max_users:  # every part's n first users hold the run's n first (the local engine's sample)
        sample = UserSample(*max_users)
        sample.update(merged["users"])
        keep = sample.kept()
    return events, merged["item_ids"], merged["events"], merged["event_bytes"], keep


def run_ray(
    root: str, cfg: PrepConfig, source: Source, report: BadRecordReport, parent: ParentVocab | None = None
) -> dict[str, Any]:
    import ray
    import ray.data
    from ray.data.context import ShuffleStrategy

    started = _ensure_ray(cfg)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        t0 = time.perf_counter()
        raw_items = read_items_ray(source, cfg, report)
        log.info("items: %d read in %.1f s", len(raw_items), time.perf_counter() - t0)
        # a source that can generate any slice of its users (synthetic) runs on the workers
        streamed = hasattr(source, "events_for_users") and hasattr(source, "num_users")
        if streamed:
            catalog = Catalog.build(raw_items, parent=parent)
            total_users = int(source.num_users)
            # a task cuts USERS_PER_BLOCK users at a time; enough blocks for every CPU, none empty
            blocks = max(2, min(PARTITIONS_PER_CPU * _cluster_cpus(), -(-total_users // USERS_PER_BLOCK)))
            cut = ray.data.range(total_users, override_num_blocks=blocks).map_batches(
                generate_and_cut, fn_args=(source, catalog, root, cfg), batch_size=USERS_PER_BLOCK
            )
        else:
            events, item_ids, n_events, event_bytes, keep = parse_events_ray(source, cfg, report)
            log.info("parse: %d events in %.1f s", n_events, time.perf_counter() - t0)
            report.check(cfg.max_error_rate)  # the parse itself may already be too bad
            catalog = Catalog.build(raw_items, item_ids, parent)
            del item_ids
            partitions, map_bytes = cut_plan(n_events, event_bytes, _cluster_cpus(), cfg)
            log.info("cut: %d partitions, shuffle map tasks of %d bytes", partitions, map_bytes)
            if keep is not None:
                events = events.map_batches(keep_users, fn_args=(keep,), batch_format="pyarrow")
            ctx = events.context  # this run's copy of the DataContext
            ctx.shuffle_strategy = ShuffleStrategy.SHUFFLE_V2  # keyed repartition: map and reduce tasks
            ctx.shuffle_input_batch_bytes = map_bytes
            ctx.use_disk_based_hash_shuffle = cfg.ray_shuffle == "disk"
            cut = events.repartition(partitions, keys=["user_id"]).map_batches(
                cut_block, fn_args=(source, catalog, root, cfg), batch_size=None, batch_format="pyarrow"
            )
        # every task wrote its shards; merge counts, stats and samples (user order) and check the
        # error rate before the catalog and the manifest are written (a failed run publishes nothing)
        stats = ExampleStats()
        if cfg.split == "source":  # as the local engine's CutPhase: zeros even without a cut task
            stats.held_out_without_history = {"test": 0, "valid": 0}
        split_infos: dict[str, list[dict]] = {s: [] for s in SPLITS}
        num_users = n_events = 0
        samples = OrderedSamples(cfg.bad_record_samples)
        for row in cut.iter_rows():
            d = json.loads(row["summary"])
            num_users += d["users"]
            n_events += d["events"]
            report.bad.update(d["bad"])
            samples.extend(d["samples"])
            stats.merge(ExampleStats(**d["stats"]))
            for split, infos in d["shards"].items():
                split_infos[split] += infos
        log.info("cut and written: %.1f s since start", time.perf_counter() - t0)
        samples.finish(report)
        if streamed:
            report.saw(f"{source.name} events", n_events)
        report.check(cfg.max_error_rate)
        items_entry = write_items(root, catalog, cfg)
        return finish_manifest(
            root, cfg, source, split_infos, items_entry, catalog, num_users, stats.to_dict(), report, parent
        )
    finally:
        if started:
            ray.shutdown()
