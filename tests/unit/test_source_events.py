"""Generic event-log converter: Parquet (streamed by batches), CSV and JSONL(.gz) with a column mapping."""

from __future__ import annotations

import datetime
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.events import EventsSource, parse_time
from data_prep.sources.records import BadField
from seller_dist.data.bad_records import BadRecordReport, DamagedInputError
from tests.source_roundtrip import prep_round_trip

COLUMNS = {
    "user": "uid",
    "item": "sku",
    "timestamp": "ts",
    "action": "event",
    "rating": "stars",
    "text": "note",
}
OPTIONS = {"columns": COLUMNS, "action_aliases": {"add_to_cart": "cart", "order": "purchase"}}

# the same log in every format; rows 4-9 are bad
ROWS = [
    {"uid": "u1", "sku": "A", "ts": 1700000000, "event": "view", "stars": None, "note": None},
    {"uid": "u1", "sku": "B", "ts": "1700000060000", "event": "ADD_TO_CART", "stars": "", "note": ""},
    {
        "uid": 42,
        "sku": "A",
        "ts": "2023-11-14T22:15:00Z",
        "event": "order",
        "stars": "4.5",
        "note": "Great  kettle",
    },
    {"uid": "", "sku": "A", "ts": 1700000000, "event": "view", "stars": None, "note": None},
    {"uid": "u2", "sku": None, "ts": 1700000000, "event": "view", "stars": None, "note": None},
    {"uid": "u2", "sku": "A", "ts": None, "event": "view", "stars": None, "note": None},
    {"uid": "u2", "sku": "A", "ts": "last tuesday", "event": "view", "stars": None, "note": None},
    {"uid": "u2", "sku": "A", "ts": 1700000000, "event": "wishlist", "stars": None, "note": None},
    {"uid": "u2", "sku": "A", "ts": 1700000000, "event": "view", "stars": "lots", "note": None},
]
EXPECTED = [
    RawEvent("u1", "A", 1700000000, "view"),
    RawEvent("u1", "B", 1700000060, "cart"),
    RawEvent("42", "A", 1700000100, "purchase", 4.5, "Great kettle"),
]
EXPECTED_BAD = {
    "uid: missing user id": 1,
    "sku: missing item id": 1,
    "ts: missing timestamp": 1,
    "ts: expected epoch seconds/ms or an ISO-8601 date-time": 1,
    "event: unknown action 'wishlist'; known ['view', 'click', 'cart', 'purchase', 'rate', 'review'] "
    "(add it to action_aliases)": 1,
    "stars: expected a number, got a non-numeric string": 1,
}


def _convert(path: str, options: dict | None = None) -> tuple[list[RawEvent], BadRecordReport]:
    report = BadRecordReport(max_samples=50)
    return list(
        EventsSource({"path": path}, OPTIONS if options is None else options, report).events()
    ), report


def _write_csv(path: Path) -> None:
    lines = ["uid,sku,ts,event,stars,note"]
    for r in ROWS:
        lines.append(
            ",".join(
                "" if r[c] is None else str(r[c]) for c in ("uid", "sku", "ts", "event", "stars", "note")
            )
        )
    path.write_text("\n".join(lines) + "\n")


def test_events_csv(tmp_path):
    _write_csv(tmp_path / "log.csv")
    events, report = _convert(str(tmp_path / "log.csv"))
    assert events == EXPECTED
    assert dict(report.bad) == EXPECTED_BAD
    assert [s["record"] for s in report.samples] == [5, 6, 7, 8, 9, 10]  # header is line 1
    assert report.total_seen == 9


def test_events_jsonl_gz(tmp_path):
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for r in ROWS:
            f.write(json.dumps(r) + "\n")
    events, report = _convert(str(path))
    assert events == EXPECTED
    assert dict(report.bad) == EXPECTED_BAD
    assert [s["record"] for s in report.samples] == [4, 5, 6, 7, 8, 9]


def test_events_parquet_streams_batches_and_reads_timestamp_columns(tmp_path):
    table = pa.Table.from_pylist(
        [{**r, "uid": str(r["uid"]), "ts": str(r["ts"]) if r["ts"] else None} for r in ROWS]
    )
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=4)
    events, report = _convert(str(tmp_path / "log.parquet"), {**OPTIONS, "batch_size": 2})
    assert events == EXPECTED and dict(report.bad) == EXPECTED_BAD
    assert [s["record"] for s in report.samples] == [4, 5, 6, 7, 8, 9]
    # a native timestamp column (what Spark/Flink write) and integer ids
    ts = pa.array([1700000000, 1700000500], pa.timestamp("s", tz="UTC"))
    pq.write_table(
        pa.table({"user_id": [7, 8], "item_id": [1, 2], "timestamp": ts, "action": ["click", "view"]}),
        tmp_path / "native.parquet",
    )
    events, _ = _convert(str(tmp_path / "native.parquet"), {})
    assert events == [RawEvent("7", "1", 1700000000, "click"), RawEvent("8", "2", 1700000500, "view")]


def test_events_glob_non_utf8_and_malformed_rows(tmp_path):
    (tmp_path / "day-1.csv").write_bytes(
        b"user_id,item_id,timestamp,action\nu1,A,1700000000,view\nu1,B\xff,1700000001,view\n"
    )
    (tmp_path / "day-2.csv").write_bytes(
        b"user_id,item_id,timestamp,action\nu1,C,1700000002,click,extra\nu1,D,1700000003,click\n"
    )
    events, report = _convert(str(tmp_path / "day-*.csv"), {})
    assert events == [RawEvent("u1", "A", 1700000000, "view"), RawEvent("u1", "D", 1700000003, "click")]
    assert dict(report.bad) == {
        "item_id: not valid UTF-8 (lone surrogate)": 1,
        "line: expected 4 fields, got 5": 1,
    }
    assert [(Path(s["file"]).name, s["record"]) for s in report.samples] == [
        ("day-1.csv", 3),
        ("day-2.csv", 2),
    ]


def test_events_mapping_errors_are_clear(tmp_path):
    _write_csv(tmp_path / "log.csv")
    with pytest.raises(ValueError, match=r"log.csv has no column\(s\) \['user_id'\] named in events_columns"):
        _convert(str(tmp_path / "log.csv"), {"columns": {**COLUMNS, "user": "user_id"}})
    with pytest.raises(ValueError, match="action_aliases map to unknown actions"):
        EventsSource({"path": "x.csv"}, {"action_aliases": {"like": "love"}}, BadRecordReport())
    with pytest.raises(FileNotFoundError, match="no file matches"):
        _convert(str(tmp_path / "nothing-*.parquet"))
    with pytest.raises(ValueError, match="cannot tell the format"):
        (tmp_path / "log.xlsx").write_text("")
        _convert(str(tmp_path / "log.xlsx"))


def test_parse_time_forms():
    assert (
        parse_time(1700000000, "t")
        == parse_time("1700000000000", "t")
        == parse_time(1.7e12, "t")
        == 1700000000
    )
    assert parse_time("2023-11-14T22:13:20Z", "t") == 1700000000
    assert parse_time("2023-11-14 23:13:20+01:00", "t") == 1700000000
    assert parse_time("2023-11-14T22:13:20", "t") == 1700000000  # no zone: UTC
    assert parse_time(datetime.date(2023, 11, 14), "t") == 1699920000
    with pytest.raises(BadField, match="negative timestamp"):
        parse_time(-5, "t")


def test_events_catalog_table_csv_and_parquet(tmp_path):
    (tmp_path / "items.csv").write_text(
        "\ufeffitem_id,title,brand,category,price,desc\n"  # a BOM, as spreadsheet exports write it
        "A,Kettle,Acme,kitchen,19.0,Boils  water\n"
        "B,Teapot,,kitchen,25.5,\n"
        ",Nameless,Acme,kitchen,1,x\n"
    )
    opts = {**OPTIONS, "item_columns": {"text": "desc"}}
    report = BadRecordReport()
    src = EventsSource({"path": "unused.csv", "items": str(tmp_path / "items.csv")}, opts, report)
    assert list(src.items()) == [
        RawItem("A", "Kettle", {"brand": "Acme", "category": "kitchen", "price": "19.0"}, "Boils water"),
        RawItem("B", "Teapot", {"category": "kitchen", "price": "25.5"}, ""),
    ]
    assert dict(report.bad) == {"item_id: missing item id": 1} and report.samples[0]["record"] == 4
    pq.write_table(
        pa.table(
            {
                "item_id": [1, 2],
                "title": ["Kettle", None],
                "tags": [["steel", "1.7l"], []],
                "price": [19.0, 2.5],
            }
        ),
        tmp_path / "items.parquet",
    )
    opts = {"item_columns": {"attributes": ["tags", "price"]}}
    src = EventsSource(
        {"path": "unused.csv", "items": str(tmp_path / "items.parquet")}, opts, BadRecordReport()
    )
    assert list(src.items()) == [
        RawItem("1", "Kettle", {"tags": "steel, 1.7l", "price": "19"}, ""),
        RawItem("2", "", {"price": "2.5"}, ""),
    ]
    with pytest.raises(
        ValueError, match=r"items.parquet has no column\(s\) \['brand'\] named in item_columns"
    ):
        opts = {"item_columns": {"attributes": ["brand"]}}
        list(
            EventsSource(
                {"path": "x.csv", "items": str(tmp_path / "items.parquet")}, opts, BadRecordReport()
            ).items()
        )


def test_events_truncated_csv_gz_fails_unless_allowed(tmp_path):
    body = "user_id,item_id,timestamp,action\n" + "".join(
        f"u{i % 7},i{i},{1700000000 + i},view\n" for i in range(3000)
    )
    blob = gzip.compress(body.encode())
    (tmp_path / "log.csv.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DamagedInputError, match=r"log\.csv\.gz: cannot be read past line \d+"):
        _convert(str(tmp_path / "log.csv.gz"), {})
    report = BadRecordReport(allow_damaged=("*.csv.gz",))
    events = list(EventsSource({"path": str(tmp_path / "log.csv.gz")}, {}, report).events())
    assert 0 < len(events) < 3000
    assert events[0] == RawEvent("u0", "i0", 1700000000, "view")
    assert not report.bad and report.total_seen == len(events)
    [damage] = report.damaged
    assert damage["lines_read"] == len(events) + 1  # and the header


def test_events_prep_round_trip(tmp_path):
    _write_csv(tmp_path / "log.csv")
    out = prep_round_trip(
        tmp_path, "events", {"path": str(tmp_path / "log.csv")}, OPTIONS, max_error_rate=0.9
    )
    assert out["records"] == 1 and out["templated"]  # u1: view then cart -> the cart is a (templated) target
