"""engine=ray: the prep conversion as a Ray Data job (same records as the local engine).

  events   synthetic: generated on the workers from user-index ranges (ray.data.range -> map_batches);
           other sources: parsed by the source on the driver (it owns the format's validation and
           bad-record accounting) and handed to Ray Data in blocks
  cut      groupby(user_id) -> map_groups: restore input order, then data_prep.examples.cut_user_examples
           (the ONE cutting implementation) -> example rows + one report row per user
  check    the driver merges the per-user bad-record reports and checks max_error_rate BEFORE any
           shard is written
  write    map_batches: every task writes its own shards (ShardWriter, unique name prefix) and returns
           ShardInfo rows; the driver writes the item catalog, prep_report.json and the manifest LAST.
Shard boundaries differ from the local engine; the records (as a multiset per split) are identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.examples import Catalog, CutParams, Explainer, cut_user_examples, encode_record
from data_prep.report import BadRecordReport
from data_prep.sources import Source, get_source
from data_prep.sources.base import RawEvent
from seller_dist.config import PrepConfig, StorageConfig
from seller_dist.data import shards
from seller_dist.data.schema import SPLITS

log = logging.getLogger(__name__)

EVENT_BLOCK_ROWS = 50_000  # driver-parsed events are handed to Ray in blocks of this many rows
USERS_PER_BLOCK = 2_000  # synthetic users generated per task


def _event_row(ev: RawEvent, seq: int) -> dict[str, Any]:
    return {
        "user_id": ev.user_id,
        "item_id": ev.item_id,
        "timestamp": int(ev.timestamp),
        "action": ev.action,
        "rating": float(ev.rating) if ev.rating is not None else np.nan,
        "has_rating": ev.rating is not None,
        "text": ev.text if ev.text is not None else "",
        "has_text": ev.text is not None,
        "aspects": json.dumps(list(ev.aspects)),
        "meta": json.dumps(ev.meta, sort_keys=True),
        "seq": seq,  # input order: the local engine's stable sort keeps it for equal timestamps
    }


def _events_from_group(group: dict[str, np.ndarray]) -> list[RawEvent]:
    order = np.argsort(group["seq"], kind="stable")
    out = []
    for i in order:
        out.append(
            RawEvent(
                user_id=str(group["user_id"][i]),
                item_id=str(group["item_id"][i]),
                timestamp=int(group["timestamp"][i]),
                action=str(group["action"][i]),
                rating=float(group["rating"][i]) if bool(group["has_rating"][i]) else None,
                text=str(group["text"][i]) if bool(group["has_text"][i]) else None,
                aspects=json.loads(str(group["aspects"][i])),
                meta=json.loads(str(group["meta"][i])),
            )
        )
    return out


def generate_users(
    batch: dict[str, np.ndarray], source_name: str, inputs: dict[str, str], options: dict[str, Any]
) -> dict[str, list]:
    """map_batches UDF: a range of user indices -> those synthetic users' events (seeded per user)."""
    source = get_source(source_name, inputs, options, BadRecordReport())
    ids = [int(u) for u in batch["id"]]
    rows: list[dict[str, Any]] = []
    for _, evs in source.events_for_users(min(ids), max(ids) + 1) if ids else ():
        rows.extend(_event_row(ev, seq) for seq, ev in enumerate(evs))
    return _columns(rows)


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys = list(rows[0]) if rows else list(_event_row(RawEvent("", "", 0), 0))
    return {k: [r[k] for r in rows] for k in keys}


def cut_group(
    group: dict[str, np.ndarray],
    catalog: Catalog,
    params: CutParams,
    explainer: Explainer | None,
    samples: int,
) -> dict[str, list]:
    """map_groups UDF: one user's events -> example rows and one report row."""
    evs = _events_from_group(group)
    uid = evs[0].user_id
    report = BadRecordReport(max_samples=samples)
    recs = cut_user_examples(uid, evs, catalog, params, report, explainer)
    out: dict[str, list] = {k: [] for k in ("kind", "split", "key", "payload", "history_len", "expl_source")}
    for r in recs:
        out["kind"].append("example")
        out["split"].append(r.split)
        out["key"].append(r.key)
        out["payload"].append(encode_record(r))
        out["history_len"].append(len(r.history))
        out["expl_source"].append(r.explanation_source)
    user_report = {
        "events": len(evs),
        "examples": len(recs),
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


def run_ray(root: str, cfg: PrepConfig, source: Source, report: BadRecordReport) -> dict[str, Any]:
    import ray
    import ray.data
    from ray.data.expressions import col

    from data_prep.pipeline import cut_params, explainer_of, finish_manifest, source_options, write_items

    started = _ensure_ray(cfg)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        raw_items = list(source.items())
        # a source that can generate any slice of its users (synthetic) runs on the workers
        streamed = hasattr(source, "events_for_users") and hasattr(source, "num_users")
        if streamed:
            catalog = Catalog.build(raw_items)
            total_users = int(source.num_users)
            blocks = max(1, min(256, -(-total_users // USERS_PER_BLOCK)))
            events = ray.data.range(total_users, override_num_blocks=max(blocks, 2)).map_batches(
                generate_users,
                fn_args=(cfg.source, dict(cfg.inputs), source_options(cfg)),
                batch_size=USERS_PER_BLOCK,
            )
            n_partitions = blocks
        else:
            rows = [_event_row(ev, seq) for seq, ev in enumerate(source.events())]
            catalog = Catalog.build(raw_items, {r["item_id"] for r in rows})
            report.check(cfg.max_error_rate)  # the parse itself may already be too bad
            n_partitions = max(2, -(-len(rows) // EVENT_BLOCK_ROWS))
            events = ray.data.from_items(rows, override_num_blocks=n_partitions)
            del rows
        params = cut_params(cfg, source)
        cut = events.groupby("user_id", num_partitions=max(2, min(200, n_partitions))).map_groups(
            cut_group,
            fn_args=(catalog, params, explainer_of(source), cfg.bad_record_samples),
            batch_format="numpy",
        )
        cut = cut.materialize()
        # merge the per-user reports, then check the error rate before any shard exists
        num_users = users_with_examples = n_events = 0
        for row in cut.filter(expr=col("kind") == "report").iter_rows():
            d = json.loads(bytes(row["payload"]))
            num_users += 1
            n_events += d["events"]
            users_with_examples += 1 if d["examples"] else 0
            part = BadRecordReport(max_samples=cfg.bad_record_samples)
            part.bad.update(d["bad"])
            part.samples = d["samples"]
            report.merge(part)
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
        return finish_manifest(root, cfg, source, split_infos, items_entry, catalog, num_users, stats, report)
    finally:
        if started:
            ray.shutdown()
