"""Sources read straight from object storage (a real S3 server, moto, on 127.0.0.1): the same
records as from local files, streamed through fsspec."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.sources.amazon2023 import Amazon2023Source
from data_prep.sources.events import EventsSource
from seller_dist import storage
from seller_dist.data.bad_records import BadRecordReport

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "amazon2023"

pytestmark = pytest.mark.slow  # starts the S3 server


def test_amazon_gz_and_events_parquet_glob_from_s3(s3_bucket, tmp_path):
    local = BadRecordReport()
    want = Amazon2023Source(
        {"reviews": str(FIX / "reviews.jsonl"), "meta": str(FIX / "meta.jsonl")}, {}, local
    )
    want_items, want_events = list(want.items()), list(want.events())
    for name in ("reviews.jsonl", "meta.jsonl"):
        storage.write_bytes(f"{s3_bucket}/amazon/{name}.gz", gzip.compress((FIX / name).read_bytes()))
    report = BadRecordReport()
    src = Amazon2023Source(
        {"reviews": f"{s3_bucket}/amazon/reviews.jsonl.gz", "meta": f"{s3_bucket}/amazon/meta.jsonl.gz"},
        {},
        report,
    )
    assert list(src.items()) == want_items and list(src.events()) == want_events
    assert report.bad == local.bad and report.total_seen == local.total_seen
    assert {s["file"] for s in report.samples} == {
        f"{s3_bucket}/amazon/reviews.jsonl.gz",
        f"{s3_bucket}/amazon/meta.jsonl.gz",
    }

    for day in (1, 2):
        path = tmp_path / f"day-{day}.parquet"
        pq.write_table(
            pa.table({"user_id": ["u1"], "item_id": [f"i{day}"], "timestamp": [1700000000 + day]}), path
        )
        storage.write_bytes(f"{s3_bucket}/logs/day-{day}.parquet", path.read_bytes())
    events = list(
        EventsSource(
            {"path": f"{s3_bucket}/logs/day-*.parquet"}, {"columns": {"action": None}}, BadRecordReport()
        ).events()
    )
    assert [(e.item_id, e.timestamp, e.action) for e in events] == [
        ("i1", 1700000001, "purchase"),
        ("i2", 1700000002, "purchase"),
    ]
