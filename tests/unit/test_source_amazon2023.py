"""Amazon Reviews 2023 converter on hand-made files in the exact public format (.jsonl and .jsonl.gz)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from data_prep.report import BadRecordReport
from data_prep.sources.amazon2023 import Amazon2023Source, price_bucket
from data_prep.sources.base import RawEvent, RawItem
from tests.source_roundtrip import prep_round_trip

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "amazon2023"
U1, U2 = "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "AE23RS3W7GZO7LHYRPKJ6UUNBXMQ"

EXPECTED_EVENTS = [
    RawEvent(
        U1,
        "B00YQ6X8EO",
        1588687728,  # 1588687728923 ms
        "review",
        5.0,
        "Such a lovely scent but not overpowering. This spray is really nice. It smells really good, goes on fine.",
    ),
    RawEvent(U1, "B01CUPMQZE", 1589000000, "review", 4.0, "Works. Conditioned my boots well."),  # seconds
    RawEvent(U2, "B00YQ6X8EO", 1600000000, "review", 1.0, "Broke after a week"),
]
EXPECTED_ITEMS = [
    RawItem(
        "B00YQ6X8EO",
        "Herbivore - Natural Sea Mist Texturizing Salt Spray",
        {"main_category": "All Beauty", "store": "HERBIVORE", "price_bucket": "10-25"},
        "Texturizing spray for beach hair. Natural sea salt Aloe vera",
    ),
    RawItem(
        "B01CUPMQZE",
        "Howard LC0008 Leather Conditioner, 8-Ounce (4-Pack)",
        {
            "main_category": "Tools & Home Improvement",
            "store": "Howard Products",
            "category": "Tools & Home Improvement",
            "leaf_category": "Wood Care",
        },
        "",
    ),
    RawItem(
        "B0CPRICE01",
        "Camera",
        {"main_category": "Electronics", "price_bucket": ">=250", "category": "Electronics"},
        "A camera.",
    ),
    RawItem("B0NOPRICE1", "", {"main_category": "Books"}, ""),
]
EXPECTED_BAD = {
    "user_id: missing": 1,
    "rating: expected a number, got a non-numeric string": 1,
    "rating: outside [1, 5]": 1,
    "text: empty review (no title and no text)": 1,
    "parent_asin: missing": 2,  # one review, one meta record
    "timestamp: expected epoch seconds or ms": 1,
    "json: truncated JSON record (the line ends mid-record)": 1,
    "features: expected a list of strings": 1,
    "price: expected a number or null, got a non-numeric string": 1,
}


def _convert(reviews: str, meta: str) -> tuple[list[RawItem], list[RawEvent], BadRecordReport]:
    report = BadRecordReport(max_samples=100)
    src = Amazon2023Source({"reviews": reviews, "meta": meta}, {}, report)
    return list(src.items()), list(src.events()), report


def _bad_lines(report: BadRecordReport, name: str) -> dict[int, str]:
    return {s["record"]: s["field"] for s in report.samples if s["file"].endswith(name)}


def test_amazon_parses_exact_values_and_counts_bad_records():
    items, events, report = _convert(str(FIX / "reviews.jsonl"), str(FIX / "meta.jsonl"))
    assert events == EXPECTED_EVENTS
    assert items == EXPECTED_ITEMS
    assert dict(report.bad) == EXPECTED_BAD
    assert report.seen == {str(FIX / "reviews.jsonl"): 10, str(FIX / "meta.jsonl"): 7}  # blank line skipped
    assert _bad_lines(report, "reviews.jsonl") == {
        4: "user_id",
        5: "rating",
        6: "rating",
        8: "text",
        9: "parent_asin",
        10: "timestamp",
        11: "json",
    }
    assert _bad_lines(report, "meta.jsonl") == {5: "features", 6: "price", 7: "parent_asin"}


def test_amazon_gz_gives_the_same_result(tmp_path):
    for name in ("reviews.jsonl", "meta.jsonl"):
        with open(FIX / name, "rb") as src, gzip.open(tmp_path / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    items, events, report = _convert(str(tmp_path / "reviews.jsonl.gz"), str(tmp_path / "meta.jsonl.gz"))
    assert events == EXPECTED_EVENTS and items == EXPECTED_ITEMS
    assert dict(report.bad) == EXPECTED_BAD


def test_amazon_truncated_gz_keeps_what_was_read_and_reports_the_rest(tmp_path):
    good = (FIX / "reviews.jsonl").read_bytes().split(b"\n")[:3]
    lines = good * 200  # long enough that the cut falls inside compressed data
    blob = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "reviews.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    report = BadRecordReport()
    events = list(Amazon2023Source({"reviews": str(path)}, {}, report).events())
    assert 0 < len(events) < 600
    assert events[:3] == EXPECTED_EVENTS
    assert list(report.bad) == [
        "file: truncated or corrupt compressed file: Compressed file ended before the end-of-stream marker was reached"
    ]


def test_amazon_non_utf8_and_lone_surrogate_text_are_bad_records(tmp_path):
    ok = (FIX / "reviews.jsonl").read_bytes().split(b"\n")[0]
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(
        ok
        + b"\n"
        + ok.replace(b"lovely", b"lov\xff\xfely")
        + b"\n"
        + ok.replace(b"lovely", b"lovely \\ud83d")
        + b"\n"
        + b'{"rating": 5.0,, "title": "x"}\n'
        + b"[1, 2]\n"
    )
    report = BadRecordReport()
    events = list(Amazon2023Source({"reviews": str(path)}, {}, report).events())
    assert events == EXPECTED_EVENTS[:1]
    assert dict(report.bad) == {
        "line: not valid UTF-8": 1,
        "title: not valid UTF-8 (lone surrogate)": 1,
        "json: malformed JSON (Expecting property name enclosed in double quotes)": 1,
        "json: expected a JSON object, got list": 1,
    }
    assert [s["record"] for s in report.samples] == [2, 3, 4, 5]


def test_price_buckets():
    assert [price_bucket(p) for p in (None, "None", "", 0, 9.99, 10, "$24.99", 99.5, "1,299.00")] == [
        None,
        None,
        None,
        "<10",
        "<10",
        "10-25",
        "10-25",
        "50-100",
        ">=250",
    ]


def test_amazon_requires_reviews_input():
    with pytest.raises(ValueError, match="inputs.reviews is required"):
        Amazon2023Source({"meta": "m.jsonl"}, {}, BadRecordReport())


def test_amazon_prep_round_trip(tmp_path):
    out = prep_round_trip(
        tmp_path,
        "amazon2023",
        {"reviews": str(FIX / "reviews.jsonl"), "meta": str(FIX / "meta.jsonl")},
        max_error_rate=0.9,
    )
    # U1 has two reviews -> one example (the second, with the first as history)
    assert out["records"] == 1 and out["users"] == 2 and out["items"] == 4
