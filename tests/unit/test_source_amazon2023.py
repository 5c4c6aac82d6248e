"""Amazon Reviews converter (2023, 2018, 2014 releases) on hand-made files in the exact public formats."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from data_prep.sources.amazon2023 import (
    Amazon2023Source,
    parse_meta_line,
    parse_review,
    price_bucket,
    review_time_seconds,
)
from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.records import BadField
from seller_dist.data.bad_records import BadRecordReport, DamagedInputError
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


def test_amazon_truncated_gz_fails_unless_allowed_and_is_never_one_bad_record(tmp_path):
    good = (FIX / "reviews.jsonl").read_bytes().split(b"\n")[:3]
    lines = good * 200  # long enough that the cut falls inside compressed data
    blob = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "reviews.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(
        DamagedInputError, match=r"reviews\.jsonl\.gz: cannot be read past line \d+ \(byte \d+"
    ):
        list(Amazon2023Source({"reviews": str(path)}, {}, BadRecordReport()).events())
    report = BadRecordReport(allow_damaged=("reviews.jsonl.gz",))
    events = list(Amazon2023Source({"reviews": str(path)}, {}, report).events())
    assert 0 < len(events) < 600
    assert events[:3] == EXPECTED_EVENTS
    assert not report.bad  # the unread rest is not "one bad record"
    [damage] = report.damaged
    assert damage["file"] == str(path) and damage["lines_read"] == len(events)


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


# ------------------------------------------------------------------ the 2018 and 2014 releases
REVIEWS_2018 = [
    {"overall": 5.0, "verified": True, "reviewTime": "09 13, 2009", "reviewerID": "A3HO2SQDCZIE9S",
     "asin": "0000031852", "style": {"Size:": " Big Girls", "Color:": " Neon Pink"}, "reviewerName": "2Cents!",
     "reviewText": "It's a great tutu and not too expensive.", "summary": "Great tutu",
     "unixReviewTime": 1252800000, "vote": "1,234",
     "image": ["https://images-na.ssl-images-amazon.com/images/I/71eG75FTJJL._SY88.jpg"]},
    # no unixReviewTime: reviewTime (month day, year) at UTC midnight; summary only
    {"overall": 3.0, "verified": False, "reviewTime": "01 19, 2014", "reviewerID": "A1KLRMWW2FWPL4",
     "asin": "B00004T2UV", "summary": "Runs small"},
    {"overall": 4.0, "reviewTime": "1 5, 2015", "reviewerID": "A1KLRMWW2FWPL4", "asin": "0000031852",
     "reviewText": "Second one for my niece.", "summary": "", "unixReviewTime": None},
]  # fmt: skip
META_2018 = [
    {"category": ["Toys &amp; Games", "Dress Up & Pretend Play", "Tutus"], "tech1": "",
     "description": ["Girls tutu in <b>neon pink</b>.", "Fits sizes 2-6."], "fit": "",
     "title": "Girls Ballet Tutu Neon Pink", "also_buy": [], "tech2": "", "brand": "Coxlists",
     "feature": ["100% nylon", "Elastic waist"], "rank": ["1,012,390 in Toys & Games ("], "also_view": [],
     "main_cat": "Toys &amp; Games", "similar_item": "", "date": "", "price": "$12.99", "asin": "0000031852",
     "imageURL": [], "imageURLHigh": []},
    {"category": ["Clothing, Shoes & Jewelry", "Women", "Clothing"], "description": "Soft cotton tee.",
     "title": "Women&#39;s Tee", "brand": "Hanes", "feature": [],
     "main_cat": '<img src="https://images-na.ssl-images-amazon.com/images/G/01/nav2/images/gui/'
                 'amazon-fashion-store-new._CB520838675_.png" class="nav-categ-image" alt="AMAZON FASHION"/>',
     "price": "$10.99 - $15.99", "asin": "B00004T2UV"},
    {"category": [], "description": [], "title": "Replacement Belt", "brand": "", "feature": [],
     "main_cat": "Tools & Home Improvement", "price": "", "asin": "B00005N5PF"},
    {"category": ["Electronics"], "description": [], "title": "Cable", "brand": "Belkin", "feature": [],
     "main_cat": "All Electronics", "asin": "B00006HYJT",
     "price": ".a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color:#fffbf3}"},
]  # fmt: skip
REVIEWS_2014 = [
    {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "reviewerName": "J. McDonald", "helpful": [2, 3],
     "reviewText": "I bought this for my husband who plays the piano.", "overall": 5.0,
     "summary": "Heavenly Highway Hymns", "unixReviewTime": 1252800000, "reviewTime": "09 13, 2009"},
    {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000031852", "helpful": [0, 0], "reviewText": "Cute!",
     "overall": 4.0, "summary": "Nice.", "unixReviewTime": 1388707200, "reviewTime": "01 3, 2014"},
]  # fmt: skip
# 2014 meta lines are Python dict literals (single quotes, not JSON), written as the release has them.
META_2014_LINES = [
    "{'asin': '0000031852', 'title': 'Girls Ballet Tutu Zebra Hot Pink', 'price': 3.17, "
    "'imUrl': 'http://ecx.images-amazon.com/images/I/51fAmVkTbyL._SY300_.jpg', "
    "'related': {'also_bought': ['B00JHONN1S', 'B002BZX8Z6'], 'bought_together': ['B002BZX8Z6']}, "
    "'salesRank': {'Toys & Games': 211836}, 'categories': [['Sports & Outdoors', 'Other Sports', 'Dance']], "
    "'brand': 'Coxlists'}",
    "{'asin': '0000013714', 'description': \"It's a hymnal with shaped notes.\", "
    "'title': 'Heavenly Highway Hymns: Shaped-Note Hymnal', 'price': 13.02, 'salesRank': {'Books': 4294967}, "
    "'categories': [['Books']]}",
    "{'asin': 'B00000J1QK', 'categories': [['Electronics', 'Computers & Accessories'], ['Office Products']]}",
    '{"asin": "B00000JSGF", "title": "A JSON line in a 2014 meta file", "categories": [["Books"]]}',
]


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_amazon_2018_reviews_and_meta_convert_with_no_bad_records(tmp_path):
    reviews = _write_jsonl(tmp_path / "Toys_and_Games.json", REVIEWS_2018)
    meta = _write_jsonl(tmp_path / "meta_Toys_and_Games.json", META_2018)
    items, events, report = _convert(reviews, meta)
    assert dict(report.bad) == {}
    assert events == [
        RawEvent(
            "A3HO2SQDCZIE9S", "0000031852", 1252800000, "review", 5.0,
            "Great tutu. It's a great tutu and not too expensive.",
        ),
        RawEvent("A1KLRMWW2FWPL4", "B00004T2UV", 1390089600, "review", 3.0, "Runs small"),  # 2014-01-19
        RawEvent("A1KLRMWW2FWPL4", "0000031852", 1420416000, "review", 4.0, "Second one for my niece."),
    ]  # fmt: skip
    assert items == [
        RawItem(
            "0000031852",
            "Girls Ballet Tutu Neon Pink",
            {"main_category": "Toys & Games", "store": "Coxlists", "price_bucket": "10-25",
             "category": "Toys & Games", "leaf_category": "Tutus"},
            "Girls tutu in <b>neon pink</b>. Fits sizes 2-6. 100% nylon Elastic waist",
        ),
        RawItem(
            "B00004T2UV",
            "Women's Tee",
            {"main_category": "AMAZON FASHION", "store": "Hanes", "price_bucket": "10-25",
             "category": "Clothing, Shoes & Jewelry", "leaf_category": "Clothing"},
            "Soft cotton tee.",
        ),
        RawItem("B00005N5PF", "Replacement Belt", {"main_category": "Tools & Home Improvement"}, ""),
        # page markup scraped into `price` is no price, not a bad item
        RawItem("B00006HYJT", "Cable", {"main_category": "All Electronics", "store": "Belkin",
                                        "category": "Electronics"}, ""),
    ]  # fmt: skip


def test_amazon_2014_reviews_and_python_literal_meta_convert_with_no_bad_records(tmp_path):
    reviews = _write_jsonl(tmp_path / "reviews_Books_5.json", REVIEWS_2014)
    meta = tmp_path / "meta_Books.json.gz"
    with gzip.open(meta, "wt", encoding="utf-8") as f:
        f.write("\n".join(META_2014_LINES) + "\n")
    items, events, report = _convert(reviews, str(meta))
    assert dict(report.bad) == {}
    assert report.seen == {reviews: 2, str(meta): 4}
    assert events == [
        RawEvent(
            "A2SUAM1J3GNN3B", "0000013714", 1252800000, "review", 5.0,
            "Heavenly Highway Hymns. I bought this for my husband who plays the piano.",
        ),
        RawEvent("A2SUAM1J3GNN3B", "0000031852", 1388707200, "review", 4.0, "Nice. Cute!"),
    ]  # fmt: skip
    assert items == [
        RawItem(
            "0000031852",
            "Girls Ballet Tutu Zebra Hot Pink",
            {
                "store": "Coxlists",
                "price_bucket": "<10",
                "category": "Sports & Outdoors",
                "leaf_category": "Dance",
            },
            "",
        ),
        RawItem(
            "0000013714",
            "Heavenly Highway Hymns: Shaped-Note Hymnal",
            {"price_bucket": "10-25", "category": "Books"},
            "It's a hymnal with shaped notes.",
        ),
        # categories: the first path only
        RawItem(
            "B00000J1QK", "", {"category": "Electronics", "leaf_category": "Computers & Accessories"}, ""
        ),
        RawItem("B00000JSGF", "A JSON line in a 2014 meta file", {"category": "Books"}, ""),
    ]


def test_amazon_formats_mixed_in_one_file_are_told_apart_per_record(tmp_path):
    reviews = _write_jsonl(
        tmp_path / "reviews.jsonl",
        [json.loads((FIX / "reviews.jsonl").read_text().split("\n")[0]), REVIEWS_2018[0], REVIEWS_2014[0]],
    )
    items, events, report = _convert(reviews, _write_jsonl(tmp_path / "meta.jsonl", [META_2018[0]]))
    assert dict(report.bad) == {}
    assert [(e.user_id, e.item_id, e.timestamp) for e in events] == [
        (U1, "B00YQ6X8EO", 1588687728),
        ("A3HO2SQDCZIE9S", "0000031852", 1252800000),
        ("A2SUAM1J3GNN3B", "0000013714", 1252800000),
    ]
    assert [i.item_id for i in items] == ["0000031852"]


def test_amazon_format_option_forces_one_format(tmp_path):
    reviews = _write_jsonl(tmp_path / "reviews.json", [REVIEWS_2018[0]])
    report = BadRecordReport()
    assert list(Amazon2023Source({"reviews": reviews}, {"format": 2023}, report).events()) == []
    assert dict(report.bad) == {"user_id: missing": 1}
    report = BadRecordReport()
    events = list(Amazon2023Source({"reviews": reviews}, {"format": "2018"}, report).events())
    assert [e.item_id for e in events] == ["0000031852"] and not report.bad
    with pytest.raises(BadField, match="reviewerID: missing"):
        parse_review({"user_id": "U", "parent_asin": "P", "rating": 5, "timestamp": 1, "text": "x"}, "2014")
    with pytest.raises(
        ValueError, match=r"options.format must be one of \['2023', '2018', '2014'\], got '2019'"
    ):
        Amazon2023Source({"reviews": reviews}, {"format": "2019"}, BadRecordReport())


def test_amazon_legacy_review_bad_records_name_the_legacy_field():
    good = dict(REVIEWS_2014[0])
    cases = {
        "reviewerID: missing": {k: v for k, v in good.items() if k != "reviewerID"},
        "asin: missing": {k: v for k, v in good.items() if k != "asin"},
        "overall: outside [1, 5]": {**good, "overall": 0.0},
        "overall: missing": {k: v for k, v in good.items() if k != "overall"},
        "unixReviewTime: missing (and no reviewTime)": {
            k: v for k, v in good.items() if k not in ("unixReviewTime", "reviewTime")
        },
        "reviewTime: expected 'M D, YYYY'": {**{k: v for k, v in good.items() if k != "unixReviewTime"},
                                              "reviewTime": "2009-09-13"},
        "reviewText: empty review (no summary and no reviewText)": {**good, "summary": " ", "reviewText": ""},
    }  # fmt: skip
    for reason, rec in cases.items():
        with pytest.raises(BadField) as err:
            parse_review(rec)
        assert str(err.value) == reason


def test_review_time_month_day_year():
    assert review_time_seconds("09 13, 2009") == 1252800000
    assert review_time_seconds("1 5, 2015") == review_time_seconds("01 05, 2015") == 1420416000
    for bad in ("13 1, 2015", "2 30, 2015", "Sep 13, 2009", "09/13/2009", 1252800000):
        with pytest.raises(BadField, match="reviewTime: expected 'M D, YYYY'"):
            review_time_seconds(bad)


def test_python_literal_meta_lines_are_read_safely(tmp_path):
    assert parse_meta_line(META_2014_LINES[2].encode()) == {
        "asin": "B00000J1QK",
        "categories": [["Electronics", "Computers & Accessories"], ["Office Products"]],
    }
    marker = tmp_path / "pwned"
    bad_lines = {
        f"{{'asin': __import__('os').system('touch {marker}')}}": "line: malformed Python-literal record",
        "{'asin': '0000031852', 'title': 'Girls Ballet": "line: truncated Python-literal record (the line ends mid-record)",
        "{'asin': '0000031852', 'related': {'also_bought': [": "line: truncated Python-literal record (the line ends mid-record)",
        # over the length cap: not handed to literal_eval at all
        "{'asin': " + "'x', " * 300_000 + "}": "line: Python-literal record longer than 1,000,000 characters",
        '["0000031852"]': "json: expected a JSON object, got list",
        "('0000031852',)": "json: malformed JSON (Expecting value)",  # only a dict literal is tried
        '{"asin": "B0", "title": "cut': "json: truncated JSON record (the line ends mid-record)",
    }  # fmt: skip
    for line, reason in bad_lines.items():
        with pytest.raises(BadField) as err:
            parse_meta_line(line.encode())
        assert str(err.value) == reason
    assert not marker.exists()
    path = tmp_path / "meta.json"
    path.write_text(META_2014_LINES[0] + "\n" + list(bad_lines)[1] + "\n\n" + META_2014_LINES[2] + "\n")
    report = BadRecordReport()
    items = list(Amazon2023Source({"reviews": "unused.json", "meta": str(path)}, {}, report).items())
    assert [i.item_id for i in items] == ["0000031852", "B00000J1QK"]
    assert dict(report.bad) == {"line: truncated Python-literal record (the line ends mid-record)": 1}
    assert [s["record"] for s in report.samples] == [2]


def test_price_ranges_and_scraped_markup():
    assert price_bucket("$10.99 - $15.99") == "10-25"  # the low end
    assert price_bucket("$9.99-$300.00") == "<10"
    assert price_bucket("$1,299.00 - $1,499.00") == ">=250"
    assert price_bucket(".a-box-inner{background-color:#fff}") is None
    assert price_bucket("<span class='a-color-price'>") is None
    with pytest.raises(BadField, match="non-numeric string"):
        price_bucket("$10.99 - call")
