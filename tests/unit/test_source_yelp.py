"""Yelp converter: hand-made files in the exact public format, and the real Yelp sample in
../shared/data/yelp (its review.json ends mid-record, exactly as published)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.pipeline import run_prep
from data_prep.report import BadRecordReport, TooManyBadRecords
from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.records import BadField
from data_prep.sources.yelp import YelpSource, parse_attributes, parse_literal
from seller_dist.config import PrepConfig
from tests.source_roundtrip import prep_round_trip

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "yelp"
# /work/shared/data/yelp from /work/main; CI clones keep shared/ beside the checkout the same way
REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "yelp"
needs_real = pytest.mark.skipif(
    not (REAL / "review.json").is_file(), reason=f"real Yelp sample not found at {REAL.resolve()}"
)


def _convert(business: Path, review: Path) -> tuple[list[RawItem], list[RawEvent], BadRecordReport]:
    report = BadRecordReport(max_samples=100)
    src = YelpSource({"business": str(business), "review": str(review)}, {}, report)
    return list(src.items()), list(src.events()), report


def test_yelp_fixture_exact_values_and_bad_records():
    items, events, report = _convert(FIX / "business.json", FIX / "review.json")
    assert items == [
        RawItem(
            "Hn7C3bBd5xHjRsmqq5lsZA",
            "Hinton's Cafe",
            {"category": "Cafes", "city": "Santa Barbara", "state": "CA", "price_range": "2", "stars": "4.5"},
            "Hinton's Cafe. Categories: Cafes, Breakfast & Brunch, Restaurants. BusinessParking: lot, street; "
            "Caters; NoiseLevel: average; RestaurantsPriceRange2: 2; WiFi: free",
        ),
        RawItem(
            "Oo0X9tEq1xVNFWfHwLYF1g",
            "Corner Laundromat",
            {"city": "Tucson", "state": "AZ", "stars": "3"},
            "Corner Laundromat",
        ),
    ]
    assert events == [
        RawEvent(
            "mh_-eMZ6K5RLWhZyISBhwA",
            "Hn7C3bBd5xHjRsmqq5lsZA",
            1531001351,
            "review",
            5.0,
            "Great coffee. Friendly staff.",
        ),
        RawEvent(
            "mh_-eMZ6K5RLWhZyISBhwA",
            "Oo0X9tEq1xVNFWfHwLYF1g",
            1546300800,
            "review",
            3.0,
            "Machines work. Slow dryers.",
        ),
        # business not in business.json: still an event; date-only format of older dumps
        RawEvent(
            "OyoGAe7OKpv6SyGZT5g77Q", "NotInBusinessJson00000", 1457481600, "review", 4.0, "Nice place."
        ),
    ]
    assert dict(report.bad) == {
        "attributes.WiFi: not a Python literal": 1,  # "__import__('os').system(...)": never evaluated
        "attributes.BusinessParking: not a Python literal": 1,
        "categories: expected a comma-separated string or null, got int": 1,
        "stars: outside [1, 5]": 1,
        "date: expected 'YYYY-MM-DD HH:MM:SS'": 1,
        "stars: missing": 1,
        "text: empty review text": 1,
        "json: truncated JSON record (the line ends mid-record)": 1,
    }
    where = {(Path(s["file"]).name, s["record"]): s["field"] for s in report.samples}
    assert where == {
        ("business.json", 3): "attributes.WiFi",
        ("business.json", 4): "attributes.BusinessParking",
        ("business.json", 5): "categories",
        ("business.json", 6): "stars",
        ("review.json", 4): "date",
        ("review.json", 5): "stars",
        ("review.json", 6): "text",
        ("review.json", 7): "json",
    }


def test_yelp_attribute_literals_are_parsed_without_eval():
    assert parse_attributes(
        {"WiFi": "u'free'", "Alcohol": "'none'", "HasTV": "None", "Caters": "True", "Price": "2",
         "Parking": "{'garage': False, 'lot': True}"}
    ) == {"WiFi": "free", "Alcohol": "none", "HasTV": None, "Caters": True, "Price": 2,
          "Parking": {"garage": False, "lot": True}}  # fmt: skip
    for evil in ("__import__('os').system('echo pwned')", "open('/etc/passwd').read()", "[1] * 10**9"):
        with pytest.raises(BadField, match="not a Python literal"):
            parse_literal(evil, "attributes.X")
    with pytest.raises(BadField, match="longer than"):
        parse_literal("'" + "a" * 5000 + "'", "attributes.X")
    with pytest.raises(BadField, match="nested value"):
        parse_literal("{'a': [1, 2]}", "attributes.X")


@needs_real
def test_yelp_real_sample_counts_truncated_last_line_and_converts_the_rest():
    items, events, report = _convert(REAL / "business.json", REAL / "review.json")
    assert len(items) == 34 and len(events) == 699
    assert report.seen == {str(REAL / "business.json"): 34, str(REAL / "review.json"): 700}
    assert dict(report.bad) == {"json: truncated JSON record (the line ends mid-record)": 1}
    (sample,) = report.samples
    assert (
        Path(sample["file"]).name == "review.json" and sample["record"] == 700 and sample["field"] == "json"
    )
    assert sample["raw"].startswith('{"review_id":"0Tjr7qnQtg4eUGX4xjyHrw"')
    assert events[0] == RawEvent(
        "7LJIzEehpGdDBtRju2BL1A",
        "FfB-AB3TrVhsf2xdK7sFBg",
        1309312159,  # 2011-06-29 01:49:19 UTC
        "review",
        4.0,
        "Had a great dinner. The piaea was fantastic. Great flavors, full of chicken, shellfish and flavor! "
        "Big enough for two to share. My wife had the barbecue chicken which was also excellent. Started dinner "
        "with a couple of cocktails (Hammer and Cycle, and Mohito) both excellently done. We are ready to come "
        "back again. Great Job.",
    )
    target = next(i for i in items if i.item_id == "tUFrWirKiKi_TAnsVWINQQ")
    assert target.title == "Target"
    assert target.attributes == {
        "category": "Department Stores", "city": "Tucson", "state": "AZ", "price_range": "2", "stars": "3.5"
    }  # fmt: skip
    assert "BusinessParking: lot" in target.text and "BikeParking" in target.text
    # the sample's reviews are for businesses that are not in its business.json
    assert not {e.item_id for e in events} & {i.item_id for i in items}


@needs_real
def test_yelp_real_sample_prep_round_trip(tmp_path):
    out = prep_round_trip(
        tmp_path, "yelp", {"business": str(REAL / "business.json"), "review": str(REAL / "review.json")}
    )
    # 695 users, 4 of them with two reviews -> 4 examples; 34 businesses + 699 reviewed ones
    assert out["users"] == 695 and out["records"] == 4 and out["bad"] == 1
    assert out["manifest"]["stats"]["items_without_metadata"] == out["items"] - 34


def test_yelp_fixture_prep_round_trip(tmp_path):
    out = prep_round_trip(
        tmp_path,
        "yelp",
        {"business": str(FIX / "business.json"), "review": str(FIX / "review.json")},
        max_error_rate=0.9,
    )
    assert out["records"] == 1 and out["items"] == 3


@needs_real
def test_yelp_real_sample_over_the_error_rate_publishes_nothing(tmp_path):
    cfg = PrepConfig(
        source="yelp",
        inputs={"business": str(REAL / "business.json"), "review": str(REAL / "review.json")},
        output=str(tmp_path / "out"),
        max_error_rate=0.001,  # the one truncated line is 1 of 734 records = 0.14%
    )
    with pytest.raises(TooManyBadRecords) as err:
        run_prep(cfg)
    msg = str(err.value)
    assert msg.startswith(
        "1 of 734 input records are bad (0.14% > max_error_rate 0.10%); nothing was published."
    )
    assert f"First: file {REAL / 'review.json'}, record 700, field 'json'" in msg
    assert not (tmp_path / "out" / "manifest.json").exists()
