"""RecBole atomic-file converter: the real MovieLens-100K (from the recbole wheel on PyPI) and
hand-made atomic files with bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.recbole import AtomicFileError, RecBoleSource, fetch_movielens_100k
from seller_dist.cli import main
from seller_dist.data.bad_records import BadRecordReport
from tests.source_roundtrip import prep_round_trip

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "recbole"  # gitignored; downloaded once


@pytest.fixture(scope="module")
def ml100k() -> Path:
    return fetch_movielens_100k(CACHE)


def test_fetch_is_idempotent(ml100k, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in ml100k.iterdir()}
    assert fetch_movielens_100k(CACHE) == ml100k
    assert main(["fetch-movielens", "--dest", str(CACHE)]) == 0  # what the docs tell a user to run
    assert capsys.readouterr().out.strip() == str(ml100k)
    assert {p.name: p.stat().st_mtime_ns for p in ml100k.iterdir()} == before
    assert sorted(before) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]


def test_movielens_100k_real_counts_and_values(ml100k):
    report = BadRecordReport()
    src = RecBoleSource({"dir": str(ml100k), "name": "ml-100k"}, {}, report)
    assert src.templated
    items = list(src.items())
    events = list(src.events())
    assert len(events) == 100_000
    assert len({e.user_id for e in events}) == 943
    assert len(items) == 1682 and len({e.item_id for e in events}) == 1682
    assert report.total_bad == 0 and report.total_seen == 100_000 + 1682
    # first data rows of ml-100k.inter / ml-100k.item
    assert events[0] == RawEvent("196", "242", 881250949, "rate", 3.0)
    assert events[-1] == RawEvent("12", "203", 879959583, "rate", 3.0)
    assert items[0] == RawItem(
        "1",
        "Toy Story",
        {"release_year": "1995", "class": "Animation Children's Comedy"},
        "Toy Story (release year: 1995; class: Animation Children's Comedy)",
    )
    assert {e.rating for e in events} == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_recbole_bad_rows_ms_timestamps_and_explicit_paths(tmp_path):
    inter = tmp_path / "toy.inter"
    inter.write_bytes(
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        b"u1\ti1\t4\t881250949\n"
        b"u1\ti2\t5\t881250950000\n"  # milliseconds
        b"u2\ti1\t3.5\t881250951.0\n"
        b"u2\ti9\t3\n"  # a column short
        b"\ti1\t3\t881250952\n"  # no user
        b"u3\ti1\tgood\t881250953\n"  # rating not a number
        b"u3\ti1\t3\tyesterday\n"  # timestamp not a number
        b"u3\ti\xff\t3\t881250954\n"  # not UTF-8
        b"\n"
    )
    item = tmp_path / "toy.item"
    item.write_text(
        "item_id:token\ttitle:token_seq\tgenre:token_seq\tprice:float\n"
        "i1\tThe Movie\tDrama Comedy\t9.5\n"
        "i2\tOther\t\t\n"
        "\tNo id\tDrama\t1\n"
    )
    report = BadRecordReport(max_samples=50)
    src = RecBoleSource({"inter": str(inter), "item": str(item)}, {}, report)
    assert list(src.items()) == [
        RawItem(
            "i1",
            "The Movie",
            {"genre": "Drama Comedy", "price": "9.5"},
            "The Movie (genre: Drama Comedy; price: 9.5)",
        ),
        RawItem("i2", "Other", {}, "Other"),
    ]
    assert list(src.events()) == [
        RawEvent("u1", "i1", 881250949, "rate", 4.0),
        RawEvent("u1", "i2", 881250950, "rate", 5.0),
        RawEvent("u2", "i1", 881250951, "rate", 3.5),
    ]
    assert dict(report.bad) == {
        "item_id: missing": 1,
        "line: expected 4 tab-separated columns, got 3": 1,
        "user_id: missing": 1,
        "rating: expected a number, got a non-numeric string": 1,
        "timestamp: expected epoch seconds or ms": 1,
        "line: not valid UTF-8": 1,
    }
    assert [(Path(s["file"]).name, s["record"]) for s in report.samples] == [
        ("toy.item", 4), ("toy.inter", 5), ("toy.inter", 6), ("toy.inter", 7), ("toy.inter", 8), ("toy.inter", 9)
    ]  # fmt: skip


def test_recbole_without_timestamp_uses_row_order_and_rejects_untyped_headers(tmp_path):
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\nu1\ti2\nu1\ti1\n")
    src = RecBoleSource({"dir": str(tmp_path), "name": "d"}, {}, BadRecordReport())
    assert [(e.item_id, e.timestamp, e.rating) for e in src.events()] == [("i2", 2, None), ("i1", 3, None)]
    (tmp_path / "bad.inter").write_text("user_id\titem_id\nu1\ti1\n")
    with pytest.raises(AtomicFileError, match=r"bad.inter: header column 'user_id' is not 'name:type'"):
        list(RecBoleSource({"inter": str(tmp_path / "bad.inter")}, {}, BadRecordReport()).events())
    with pytest.raises(ValueError, match="give inputs.dir and inputs.name"):
        RecBoleSource({"dir": str(tmp_path)}, {}, BadRecordReport())


def test_recbole_prep_round_trip_on_movielens_100k(ml100k, tmp_path):
    # the first 3,000 real ratings (the whole file costs the pipeline ~6 s; the parse is tested above)
    head = (ml100k / "ml-100k.inter").read_text().splitlines(keepends=True)[:3_001]
    part = tmp_path / "ml"
    part.mkdir()
    (part / "ml-100k.inter").write_text("".join(head))
    (part / "ml-100k.item").write_bytes((ml100k / "ml-100k.item").read_bytes())
    out = prep_round_trip(tmp_path, "recbole", {"dir": str(part), "name": "ml-100k"}, max_history=5)
    assert out["templated"] and out["items"] == 1682
    assert out["records"] == 3_000 - out["users"]  # every rating after a user's first is a target
