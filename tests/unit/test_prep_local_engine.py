"""The local engine's bounded-memory path: events spilled to user-hash partitions and cut one
partition at a time give the same records however the input is split and partitioned, and its peak
memory does not grow with the log."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

import data_prep.pipeline as pipeline
from data_prep.partitions import PartitionSpill, events_by_user, partition_of, read_partition
from data_prep.sources.base import RawEvent
from seller_dist.config import PrepConfig, from_dict
from seller_dist.data import shards
from seller_dist.data.schema import SPLITS
from tests.prep_sources import write_events_inputs

COLUMNS = {"user": "uid", "item": "sku", "timestamp": "ts", "action": "type", "rating": None, "text": "note"}
OPTIONS = {"action_aliases": {"add_to_cart": "cart"}}


def records(root: str) -> dict[str, list[bytes]]:
    m = json.loads((Path(root) / "manifest.json").read_text())
    out = {}
    for split in SPLITS:
        out[split] = sorted(
            s["json"]
            for info in m["splits"][split]["shards"]
            for s in shards.iter_tar_samples(shards.read_shard_bytes(root, info), info["path"])
        )
    return out


def run(tmp_path: Path, name: str, path: str, **cfg) -> dict:
    return pipeline.run_prep(
        from_dict(
            PrepConfig,
            {
                "source": "events",
                "inputs": {"path": path},
                "events_columns": COLUMNS,
                "source_options": OPTIONS,
                "output": str(tmp_path / name),
                "max_history": 4,
                "max_error_rate": 0.2,
                **cfg,
            },
        )  # fmt: skip
    )


def prep(tmp_path: Path, name: str, path: str, **cfg) -> tuple[dict, dict]:
    return run(tmp_path, name, path, **cfg), records(str(tmp_path / name))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_records_do_not_depend_on_read_parts_or_partitions(tmp_path, fmt):
    path = write_events_inputs(tmp_path / "raw")[fmt]
    m0, whole = prep(tmp_path, "whole", path, read_part_bytes=0, spill_partitions=1)
    assert sum(map(len, whole.values())) > 500
    # many read parts, many partitions, and partitions over the bound split again (twice deep)
    m1, split = prep(tmp_path, "split", path, read_part_bytes=2048, spill_partitions=3,
                     partition_max_events=1000)  # fmt: skip
    assert split == whole
    assert m1["stats"] == m0["stats"] and m1["vocab"] == m0["vocab"] and m1["items"] == m0["items"]
    rep0 = json.loads((tmp_path / "whole" / "prep_report.json").read_text())
    rep1 = json.loads((tmp_path / "split" / "prep_report.json").read_text())
    assert rep1["bad_by_reason"] == rep0["bad_by_reason"] and rep1["records_seen"] == rep0["records_seen"]


def test_spill_round_trip_keeps_each_users_events_in_input_order(tmp_path):
    evs = [RawEvent(f"u{n % 7}", f"i{n}", 100 - n % 3, "view", rating=None if n % 2 else 4.0,
                    text=None if n % 3 else f"t{n}", aspects=["a"] if n == 5 else [],
                    meta={"k": n} if n == 6 else {}) for n in range(60)]  # fmt: skip
    spill = PartitionSpill(str(tmp_path), 4, buffer_rows=8)
    for n, ev in enumerate(evs):
        spill.add(ev, n)
    parts = spill.close()
    assert sum(p.rows for p in parts) == 60
    got: dict[str, list[RawEvent]] = {}
    for p in parts:
        by_user = events_by_user(read_partition(p))
        assert all(partition_of(u, 4) == int(p.path[-11:-6]) for u in by_user)
        got.update(by_user)
    assert got == {u: [e for e in evs if e.user_id == u] for u in {e.user_id for e in evs}}


def _peak(tmp_path: Path, n: int) -> int:
    path = tmp_path / f"ev{n}.csv"
    with open(path, "w") as f:
        f.write("uid,sku,ts,type,note\n")
        for k in range(n):
            f.write(f"u{(k * 7919) % (n // 8)},s{k % 50},{1_700_000_000 + k},view,\n")
    tracemalloc.start()
    try:
        run(tmp_path, f"out{n}", str(path), spill_partitions=8, partition_max_events=2000,
             shard_max_records=500, max_history=3)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.slow
def test_local_engine_memory_does_not_grow_with_the_log(tmp_path):
    _peak(tmp_path, 2_000)  # warm imports and caches
    small, large = _peak(tmp_path, 4_000), _peak(tmp_path, 32_000)
    assert large < 1.5 * small, (small, large)
