"""End-to-end check for a source converter: prep to a folder, read the shards back, compare with
what the source itself yields (the records must carry exactly the source's events and items)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from data_prep.pipeline import run_prep, source_options
from data_prep.sources import get_source
from data_prep.sources.base import RawEvent, RawItem
from seller_dist.config import PrepConfig
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import SPLITS
from seller_dist.data.shards import Manifest, iter_tar_samples, read_shard_bytes


def read_dataset(root: str) -> tuple[Manifest, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    m = Manifest.load(root)
    records = []
    for split in SPLITS:
        for info in m.shards(split):
            for s in iter_tar_samples(read_shard_bytes(root, info), info["path"]):
                records.append(json.loads(s["json"]))
    items = {}
    for info in m.data["items"]["shards"]:
        for s in iter_tar_samples(read_shard_bytes(root, info), info["path"]):
            rec = json.loads(s["json"])
            items[rec["item_id"]] = rec
    return m, records, items


def _event_tuple(user: str, ev: RawEvent) -> tuple:
    return (user, ev.item_id, ev.timestamp, ev.action, ev.rating)


def prep_round_trip(
    tmp_path: Path, source: str, inputs: dict[str, str], options: dict[str, Any] | None = None, **cfg: Any
) -> dict[str, Any]:
    """Run prep and assert the shards hold exactly the source's events and items; returns counts."""
    cfg_obj = PrepConfig(
        source=source, inputs=inputs, source_options=dict(options or {}), output=str(tmp_path / "prep"), **cfg
    )
    cfg_obj.validate()
    report = BadRecordReport()
    src = get_source(source, inputs, source_options(cfg_obj), report)
    raw_items: dict[str, RawItem] = {}
    for it in src.items():
        raw_items.setdefault(it.item_id, it)
    by_user: dict[str, list[RawEvent]] = defaultdict(list)
    for ev in src.events():
        by_user[ev.user_id].append(ev)

    manifest = run_prep(cfg_obj)
    _, records, items = read_dataset(cfg_obj.output)

    # every target: the user's events sorted by time (stable), each one after min_history
    expected = {}
    for user, evs in by_user.items():
        evs = sorted(evs, key=lambda e: e.timestamp)
        targets = [t for t in range(cfg_obj.min_history, len(evs)) if evs[t].text or src.templated]
        if cfg_obj.examples_per_user > 0:
            targets = targets[-cfg_obj.examples_per_user :]
        for t in targets:
            expected[_event_tuple(user, evs[t])] = (evs[t], evs[max(0, t - cfg_obj.max_history) : t])
    got = {(r["user_id"], r["item_id"], r["timestamp"], r["action"], r["rating"]): r for r in records}
    assert len(got) == len(records), "two records for the same event"
    assert set(got) == set(expected)
    for key, rec in got.items():
        ev, hist = expected[key]
        if ev.text:
            assert rec["explanation"] == ev.text and rec["explanation_source"] == src.text_kind
        else:
            assert rec["explanation_source"] == "template" and rec["explanation"]
        assert [
            (h["item_id"], h["timestamp"], h["action"], h["rating"], h["review"]) for h in rec["history"]
        ] == [(h.item_id, h.timestamp, h.action, h.rating, h.text) for h in hist]
        it = raw_items.get(ev.item_id)
        assert rec["item_attributes"] == (it.attributes if it else {})
        assert rec["item_title"] == (it.title if it else "")

    # the catalog: every source item with its metadata, plus items seen only in events (none)
    event_items = {e.item_id for evs in by_user.values() for e in evs}
    assert set(items) == set(raw_items) | event_items
    for iid, rec in items.items():
        it = raw_items.get(iid)
        want = (it.title, it.attributes, it.text) if it else ("", {}, "")
        assert (rec["title"], rec["attributes"], rec["text"]) == want
    assert manifest["stats"]["input_records"] == report.total_seen
    return {
        "records": len(records),
        "users": len(by_user),
        "items": len(items),
        "bad": report.total_bad,
        "manifest": manifest,
        "templated": src.templated,
    }
