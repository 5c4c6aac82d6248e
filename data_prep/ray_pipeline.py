"""engine=ray: the prep conversion as a Ray Data job (the same records as the local engine).

  parse    the source's input is split into read parts (data_prep.sources.base.ReadPart: a byte range
           of a JSONL/CSV/TSV/atomic file, a run of Parquet row groups, a whole .gz file); one Ray task
           per part runs the source's OWN parser and validation on it and returns event rows (with
           `seq` = part index and position: input order) plus one row with its bad-record report.
           The item catalog is read the same way. The driver merges reports and never holds events.
           synthetic: users are generated on the workers from user-index ranges.
  check    the parse's error rate is checked before anything else runs
  cut      groupby(user_id) -> map_groups: restore input order by seq, then data_prep.examples (the ONE
           cutting implementation) -> example rows + one report row per user
  check    the per-user reports are merged and max_error_rate is checked BEFORE any shard is written
  write    map_batches: every task writes its own shards (ShardWriter, unique name prefix) and returns
           ShardInfo rows; the driver writes the item catalog, prep_report.json and the manifest LAST.

Why parse tasks and not ray.data.read_csv/read_json: those convert cells to typed columns on their
own terms (a user id "007" becomes 7, a malformed row is dropped or fails the file without a line
number), so records and bad-record counts would differ from the local engine's. The parse tasks read
Parquet with pyarrow and text formats line by line through the same functions as the local engine.
Shard boundaries differ from the local engine; the records (as a multiset per split) are identical.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_prep.examples import Catalog, CutParams, Explainer, cut_user_payloads
from data_prep.partitions import SCHEMA, append_event, empty_columns, events_by_user, seq_of
from data_prep.report import BadRecordReport, OrderedSamples
from data_prep.sources import Source
from data_prep.sources.base import RawItem, ReadPart
from data_prep.vocab import ParentVocab
from seller_dist.config import PrepConfig, StorageConfig
from seller_dist.data import shards
from seller_dist.data.schema import SPLITS

log = logging.getLogger(__name__)

ROWS_PER_BLOCK = 50_000  # a parse task yields its events in blocks of this many rows
USERS_PER_BLOCK = 2_000  # synthetic users generated per task

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


def _report_json(report: BadRecordReport) -> str:
    return json.dumps({"seen": report.seen, "bad": report.bad, "samples": report.samples})


def _report_from_json(text: str, max_samples: int) -> BadRecordReport:
    d = json.loads(text)
    rep = BadRecordReport(max_samples=max_samples)
    rep.seen.update(d["seen"])
    rep.bad.update(d["bad"])
    rep.samples = d["samples"]
    return rep


def _report_table(schema: pa.Schema, part: ReadPart, report: BadRecordReport) -> pa.Table:
    row = {name: [None] for name in schema.names}
    row.update(seq=[seq_of(part.index, 0)], kind=["report"], report=[_report_json(report)])
    return pa.table(row, schema=schema)


def parse_event_parts(
    batch: dict[str, np.ndarray], source: Source, parts: list[ReadPart], max_samples: int
) -> Iterator[pa.Table]:
    """map_batches UDF: part indices -> that part's events (blocks of rows) and its report row."""
    for p in batch["part"]:
        part = parts[int(p)]
        src = copy.copy(source)
        src.report = BadRecordReport(max_samples=max_samples)
        cols = empty_columns()
        for pos, ev in enumerate(src.read_events(part)):
            append_event(cols, ev, seq_of(part.index, pos))
            if len(cols["seq"]) >= ROWS_PER_BLOCK:
                yield _event_table(cols)
                cols = empty_columns()
        if cols["seq"]:
            yield _event_table(cols)
        yield _report_table(EVENT_SCHEMA, part, src.report)


def _event_table(cols: dict[str, list]) -> pa.Table:
    n = len(cols["seq"])
    return pa.table({**cols, "kind": ["event"] * n, "report": [None] * n}, schema=EVENT_SCHEMA)


def parse_item_parts(
    batch: dict[str, np.ndarray], source: Source, parts: list[ReadPart], max_samples: int
) -> Iterator[pa.Table]:
    """map_batches UDF: part indices -> that part's catalog rows and its report row."""
    for p in batch["part"]:
        part = parts[int(p)]
        src = copy.copy(source)
        src.report = BadRecordReport(max_samples=max_samples)
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


def _merge_part_reports(rows: list[dict[str, Any]], report: BadRecordReport, max_samples: int) -> None:
    """Part reports in part order: the same counts and samples as one report read part after part."""
    for row in sorted(rows, key=lambda r: int(r["seq"])):
        report.merge(_report_from_json(row["report"], max_samples))


def read_items_ray(source: Source, cfg: PrepConfig, report: BadRecordReport) -> list[RawItem]:
    """The catalog parsed by Ray tasks; the driver gets the items (bounded by the catalog, not the log)."""
    from ray.data.expressions import col

    parts = source.item_parts(cfg.read_part_bytes)
    if not parts:
        return []
    rows = (
        _parts_dataset(len(parts))
        .map_batches(
            parse_item_parts,
            fn_args=(source, parts, cfg.bad_record_samples),
            batch_size=1,
            batch_format="numpy",
        )
        .materialize()
    )
    _merge_part_reports(
        rows.filter(expr=col("kind") == "report").select_columns(["seq", "report"]).take_all(),
        report,
        cfg.bad_record_samples,
    )
    items = sorted(rows.filter(expr=col("kind") == "item").take_all(), key=lambda r: int(r["seq"]))
    return [RawItem(r["item_id"], r["title"], json.loads(r["attributes"]), r["text"]) for r in items]


def generate_users(batch: dict[str, np.ndarray], source: Source, max_samples: int) -> pa.Table:
    """map_batches UDF: a range of user indices -> those synthetic users' events (seeded per user)."""
    ids = [int(u) for u in batch["id"]]
    cols = empty_columns()
    src = copy.copy(source)
    src.report = BadRecordReport(max_samples=max_samples)
    for _, evs in src.events_for_users(min(ids), max(ids) + 1) if ids else ():
        for pos, ev in enumerate(evs):
            append_event(cols, ev, pos)
    return pa.table(cols, schema=SCHEMA)  # explicit types: a null text stays null, not NaN


def cut_group(
    group: dict[str, np.ndarray],
    catalog: Catalog,
    params: CutParams,
    explainer: Explainer | None,
    samples: int,
) -> dict[str, list]:
    """map_groups UDF: one user's events -> example rows and one report row."""
    ((uid, evs),) = events_by_user(group).items()
    report = BadRecordReport(max_samples=samples)
    pairs = cut_user_payloads(uid, evs, catalog, params, report, explainer)
    out: dict[str, list] = {k: [] for k in ("kind", "split", "key", "payload", "history_len", "expl_source")}
    for r, payload in pairs:
        out["kind"].append("example")
        out["split"].append(r.split)
        out["key"].append(r.key)
        out["payload"].append(payload)
        out["history_len"].append(len(r.history))
        out["expl_source"].append(r.explanation_source)
    user_report = {
        "events": len(evs),
        "examples": len(pairs),
        "bad": dict(report.bad),
        "samples": report.samples,
        "user": uid,
    }
    out["kind"].append("report")
    out["split"].append("")
    out["key"].append(uid)
    out["payload"].append(json.dumps(user_report, sort_keys=True).encode())
    out["history_len"].append(0)
    out["expl_source"].append("")
    return out


def write_shards_batch(
    batch: dict[str, np.ndarray],
    root: str,
    max_records: int,
    max_bytes: int,
    storage_cfg: StorageConfig | None,
) -> dict[str, list]:
    """map_batches UDF: write this batch's examples into its own shards; return ShardInfo rows."""
    order = sorted(range(len(batch["key"])), key=lambda i: str(batch["key"][i]))
    digest = hashlib.sha1("".join(str(batch["key"][i]) for i in order).encode()).hexdigest()[:12]
    out: dict[str, list] = {
        k: [] for k in ("split", "path", "count", "bytes", "sha256", "hist_sum", "hist_max", "sources")
    }
    for split in SPLITS:
        idx = [i for i in order if batch["split"][i] == split]
        if not idx:
            continue
        writer = shards.ShardWriter(root, split, max_records, max_bytes, storage_cfg, prefix=f"part-{digest}")
        start = 0
        for info in _write_all(writer, batch, idx):
            n = info.count
            chunk = idx[start : start + n]
            start += n
            lens = [int(batch["history_len"][i]) for i in chunk]
            out["split"].append(split)
            out["path"].append(info.path)
            out["count"].append(info.count)
            out["bytes"].append(info.bytes)
            out["sha256"].append(info.sha256)
            out["hist_sum"].append(sum(lens))
            out["hist_max"].append(max(lens))
            out["sources"].append(json.dumps(Counter(str(batch["expl_source"][i]) for i in chunk)))
    return out


def _write_all(writer: shards.ShardWriter, batch: dict[str, np.ndarray], idx: list[int]) -> Iterator:
    for i in idx:
        writer.write({"__key__": str(batch["key"][i]), "json": bytes(batch["payload"][i])})
    yield from writer.close()


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
    """(events dataset, item ids seen) with the parse's bad records merged into `report`."""
    from ray.data.expressions import col

    parts = source.event_parts(cfg.read_part_bytes)
    parsed = (
        _parts_dataset(len(parts))
        .map_batches(
            parse_event_parts,
            fn_args=(source, parts, cfg.bad_record_samples),
            batch_size=1,
            batch_format="numpy",
        )
        .materialize()
    )
    _merge_part_reports(
        parsed.filter(expr=col("kind") == "report").select_columns(["seq", "report"]).take_all(),
        report,
        cfg.bad_record_samples,
    )
    events = parsed.filter(expr=col("kind") == "event").drop_columns(["kind", "report"])
    if source.wants_text_pairs:
        with_text = events.filter(expr=col("text").is_not_null()).select_columns(["user_id", "item_id"])
        source.after_events({(r["user_id"], r["item_id"]) for r in with_text.iter_rows()})
    item_ids = set(events.unique("item_id"))
    return events, item_ids, len(parts)


def run_ray(
    root: str, cfg: PrepConfig, source: Source, report: BadRecordReport, parent: ParentVocab | None = None
) -> dict[str, Any]:
    import ray
    import ray.data
    from ray.data.expressions import col

    from data_prep.pipeline import cut_params, explainer_of, finish_manifest, write_items

    started = _ensure_ray(cfg)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        raw_items = read_items_ray(source, cfg, report)
        # a source that can generate any slice of its users (synthetic) runs on the workers
        streamed = hasattr(source, "events_for_users") and hasattr(source, "num_users")
        if streamed:
            catalog = Catalog.build(raw_items, parent=parent)
            total_users = int(source.num_users)
            blocks = max(1, min(256, -(-total_users // USERS_PER_BLOCK)))
            events = ray.data.range(total_users, override_num_blocks=max(blocks, 2)).map_batches(
                generate_users, fn_args=(source, cfg.bad_record_samples), batch_size=USERS_PER_BLOCK
            )
            n_partitions = blocks
        else:
            events, item_ids, n_parts = parse_events_ray(source, cfg, report)
            report.check(cfg.max_error_rate)  # the parse itself may already be too bad
            catalog = Catalog.build(raw_items, item_ids, parent)
            del item_ids
            n_partitions = max(2, n_parts, -(-events.count() // ROWS_PER_BLOCK))
        params = cut_params(cfg, source)
        cut = events.groupby("user_id", num_partitions=max(2, min(200, n_partitions))).map_groups(
            cut_group,
            fn_args=(catalog, params, explainer_of(source), cfg.bad_record_samples),
            batch_format="numpy",
        )
        cut = cut.materialize()
        # merge the per-user reports (samples in user order), then check before any shard exists
        num_users = users_with_examples = n_events = 0
        samples = OrderedSamples(cfg.bad_record_samples)
        for row in cut.filter(expr=col("kind") == "report").iter_rows():
            d = json.loads(bytes(row["payload"]))
            num_users += 1
            n_events += d["events"]
            users_with_examples += 1 if d["examples"] else 0
            part = BadRecordReport(max_samples=cfg.bad_record_samples)
            part.bad.update(d["bad"])
            part.samples = d["samples"]
            samples.add_report(d["user"], part, report)
        samples.finish(report)
        if streamed:
            report.saw(f"{source.name} events", n_events)
        report.check(cfg.max_error_rate)
        infos = (
            cut.filter(expr=col("kind") == "example")
            .map_batches(
                write_shards_batch,
                fn_args=(root, cfg.shard_max_records, cfg.shard_max_bytes, cfg.storage),
                batch_size=max(cfg.shard_max_records, 1000),
                batch_format="numpy",
            )
            .take_all()
        )
        split_infos: dict[str, list[dict]] = {s: [] for s in SPLITS}
        per_split = dict.fromkeys(SPLITS, 0)
        sources: Counter = Counter()
        hist_sum = hist_max = 0
        for r in infos:
            split_infos[r["split"]].append(
                {"path": r["path"], "count": int(r["count"]), "bytes": int(r["bytes"]), "sha256": r["sha256"]}
            )
            per_split[r["split"]] += int(r["count"])
            hist_sum += int(r["hist_sum"])
            hist_max = max(hist_max, int(r["hist_max"]))
            sources.update(json.loads(r["sources"]))
        total = sum(per_split.values())
        stats = {
            "examples": per_split,
            "history_len_mean": round(hist_sum / max(1, total), 4),
            "history_len_max": hist_max,
            "explanation_sources": dict(sorted(sources.items())),
            "users_with_examples": users_with_examples,
        }
        items_entry = write_items(root, catalog, cfg)
        return finish_manifest(
            root, cfg, source, split_infos, items_entry, catalog, num_users, stats, report, parent
        )
    finally:
        if started:
            ray.shutdown()
