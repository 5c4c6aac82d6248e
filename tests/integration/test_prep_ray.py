"""engine=ray on a real local Ray (num_cpus=2, 127.0.0.1): the same records as the local engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import data_prep.pipeline as pipeline
from data_prep.report import BadRecordReport
from data_prep.sources.base import RawEvent, RawItem, Source
from seller_dist.config import PrepConfig
from seller_dist.config_loader import from_dict
from seller_dist.data import shards
from seller_dist.data.schema import SPLITS

pytestmark = pytest.mark.slow

SMALL = {"num_users": 50, "num_items": 40, "events_per_user_min": 3, "events_per_user_max": 10}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    from seller_dist.ray_cluster import init_ray

    init_ray(
        None,
        2,
        runtime_env={
            "env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        },
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def records_by_split(root: str, manifest: dict) -> dict[str, list[bytes]]:
    out = {}
    for split in SPLITS:
        recs = []
        for info in manifest["splits"][split]["shards"]:
            recs += [
                s["json"] for s in shards.iter_tar_samples(shards.read_shard_bytes(root, info), info["path"])
            ]
        out[split] = sorted(recs)
    return out


class TiedLogSource(Source):
    """Non-streaming source with equal timestamps (order must follow the input), duplicates, a bad
    line and an item without metadata: the hard cases for a distributed re-implementation."""

    name = "tied"

    def __init__(self) -> None:
        super().__init__({"events": "events.jsonl"}, {}, BadRecordReport())

    def items(self):
        return iter([RawItem(f"it{i}", f"Thing {i}", {"category": f"c{i % 3}"}) for i in range(8)])

    def events(self):
        for line in range(1, 601):
            self.report.saw("events.jsonl")
            if line == 300:
                self.report.reject("events.jsonl", line, "user_id", "missing", "{}")
                continue
            item = "ghost" if line % 97 == 0 else f"it{(line * 7) % 8}"
            ts = 1_000_000 + (line // 3) * 60  # three events share each timestamp
            text = None if line % 11 == 0 else f"review {line}"
            yield RawEvent(f"u{line % 17}", item, ts, "purchase", rating=float(line % 5), text=text)
            if line % 50 == 0:
                yield RawEvent(f"u{line % 17}", item, ts, "purchase", rating=float(line % 5), text=text)


def test_ray_engine_equals_local_engine(tmp_path, local_ray, monkeypatch):
    base = {"max_history": 5, "shard_max_records": 40, "source_options": SMALL}
    local = pipeline.run_prep(from_dict(PrepConfig, {**base, "output": str(tmp_path / "local")}))
    ray_m = pipeline.run_prep(
        from_dict(PrepConfig, {**base, "output": str(tmp_path / "ray"), "engine": "ray"})
    )
    assert records_by_split(str(tmp_path / "local"), local) == records_by_split(str(tmp_path / "ray"), ray_m)
    for key in ("vocab", "items", "stats", "templated", "source"):
        assert local[key] == ray_m[key], key
    assert all(s["count"] <= 40 for sp in SPLITS for s in ray_m["splits"][sp]["shards"])
    assert json.loads((tmp_path / "ray" / "prep_report.json").read_text()) == json.loads(
        (tmp_path / "local" / "prep_report.json").read_text()
    )

    # a parsed (non-streaming) source with ties, duplicates, blank texts, unknown-metadata items
    def fake_get_source(name, inputs, options, report):
        src = TiedLogSource()
        src.report = report
        return src

    monkeypatch.setattr(pipeline, "get_source", fake_get_source)
    cfg = {"max_history": 4, "shard_max_records": 50, "max_error_rate": 0.2}
    local = pipeline.run_prep(from_dict(PrepConfig, {**cfg, "output": str(tmp_path / "l2")}))
    ray_m = pipeline.run_prep(from_dict(PrepConfig, {**cfg, "output": str(tmp_path / "r2"), "engine": "ray"}))
    assert records_by_split(str(tmp_path / "l2"), local) == records_by_split(str(tmp_path / "r2"), ray_m)
    assert local["stats"] == ray_m["stats"] and local["vocab"] == ray_m["vocab"]
    assert local["stats"]["items_without_metadata"] == 1
    rep_l = json.loads((tmp_path / "l2" / "prep_report.json").read_text())
    rep_r = json.loads((tmp_path / "r2" / "prep_report.json").read_text())
    assert rep_l["bad_by_reason"] == rep_r["bad_by_reason"]
    assert set(rep_l["bad_by_reason"]) == {
        "user_id: missing",
        "event: duplicate event",
        "text: empty explanation text",
    }
    assert rep_l["records_bad"] == rep_r["records_bad"] and rep_l["counts_in"] == rep_r["counts_in"] == 600
