"""Yelp converter: hand-made files in the exact public format, and the real Yelp sample in
../shared/data/yelp (its review.json ends mid-record, exactly as published)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.pipeline import run_prep
from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.records import BadField
from data_prep.sources.yelp import YelpSource, parse_attributes, parse_date, parse_literal
from seller_dist.config import PrepConfig
from seller_dist.data.bad_records import BadRecordReport, TooManyBadRecords
from tests.prep_sources import REAL_YELP, real_yelp
from tests.source_roundtrip import prep_round_trip

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "yelp"
# /work/shared/data/yelp from /work/main; CI clones keep shared/ beside the checkout the same way
REAL = REAL_YELP


@pytest.fixture
def real_sample() -> Path:
    return real_yelp()  # without the sample the test fails saying where it looked, never skips


needs_real = pytest.mark.usefixtures("real_sample")


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
        "categories: expected a comma-separated string, a list or null, got int": 1,
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


# ------------------------------------------------------------------ schema variants of older dumps
# 2014-2016 academic dataset: attributes are a real JSON object (booleans, numbers, nested objects),
# the price key is "Price Range", categories a JSON list; records carry type/neighborhoods/full_address.
BUSINESS_2015 = {
    "business_id": "KayYbHCt-RkbGcPdGOThNg",
    "full_address": "1201 Washington Ave\nCarnegie, PA 15106",
    "hours": {"Tuesday": {"close": "02:00", "open": "11:00"}},
    "open": True,
    "categories": ["Bars", "American (New)", "Nightlife"],
    "city": "Carnegie",
    "review_count": 40,
    "name": "Rocky's Lounge",
    "neighborhoods": [],
    "longitude": -80.0845,
    "state": "PA",
    "stars": 4.0,
    "latitude": 40.3965,
    "attributes": {
        "Alcohol": "full_bar",
        "Noise Level": "average",
        "Good For": {"dessert": False, "latenight": True, "lunch": False, "dinner": True},
        "Accepts Credit Cards": True,
        "Price Range": 2,
        "Smoking": "no",
        "Take-out": False,
    },
    "type": "business",
}
# 2017-2018 dumps: attributes a JSON list of "Name: value" strings, categories a JSON list.
BUSINESS_2017 = {
    "business_id": "FYWN1wneV18bWNgQjJ2GNg",
    "name": "Bocca Bistro",
    "neighborhood": "",
    "address": "4855 E Warner Rd",
    "city": "Ahwatukee",
    "state": "AZ",
    "postal_code": "85044",
    "stars": 4.5,
    "review_count": 22,
    "is_open": 1,
    "attributes": [
        "Alcohol: full_bar",
        "Ambience: {'romantic': False, 'intimate': False, 'casual': True, 'touristy': None}",
        "BikeParking: True",
        "BusinessParking: {'garage': False, 'street': True, 'validated': False, 'lot': False, 'valet': False}",
        "RestaurantsPriceRange2: 2",
        "WiFi: no",
    ],
    "categories": ["Italian", "Restaurants"],
    "hours": ["Monday 11:0-21:0", "Tuesday 11:0-21:0"],
    "type": "business",
}
# Current-style object, but with the unquoted strings of some dumps and u'' keys / None in nested dicts.
BUSINESS_PLAIN = {
    "business_id": "PlainStrings0000000001",
    "name": "Corner Pub",
    "city": "Las Vegas",
    "state": "NV",
    "stars": 3.5,
    "attributes": {
        "Alcohol": "full_bar",
        "RestaurantsAttire": "casual",
        "WiFi": "free",
        "NoiseLevel": "average",
        "Ambience": "{u'romantic': False, u'casual': True, u'divey': None}",
        "RestaurantsPriceRange2": "3",
    },
    "categories": "Pubs, Bars",
}
REVIEWS_OLD = [
    # 2014-2016: type, votes, date only
    {"votes": {"funny": 0, "useful": 2, "cool": 1}, "user_id": "Xqd0DzHaiyRqVH3WRG7hzg",
     "review_id": "15SdjuK7DmYqUAj6rjGowg", "stars": 5, "date": "2007-05-17",
     "text": "Great bar food.\n\nFriendly.", "type": "review", "business_id": "KayYbHCt-RkbGcPdGOThNg"},
    # current: date with time
    {"review_id": "x7mDIiDB3jEiPGPHOmDzyw", "user_id": "msQe1u7Z_XuqjGoqhB0J5g",
     "business_id": "FYWN1wneV18bWNgQjJ2GNg", "stars": 2.0, "useful": 0, "funny": 0, "cool": 0,
     "text": "Slow service.", "date": "2016-11-09 20:09:03"},
    # a re-export with ISO 'T' and 'Z'
    {"review_id": "abcDIiDB3jEiPGPHOmDzyw", "user_id": "msQe1u7Z_XuqjGoqhB0J5g",
     "business_id": "PlainStrings0000000001", "stars": 4, "text": "Good beer.", "date": "2018-01-02T03:04:05Z"},
]  # fmt: skip


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_yelp_attribute_variants_of_every_dump_era():
    # (a) current: Python-literal strings; (b) plain words; (c) nested dicts with u'' and None
    assert parse_attributes(
        {"WiFi": "u'free'", "Alcohol": "full_bar", "RestaurantsAttire": "casual", "NoiseLevel": "average",
         "AgesAllowed": "21plus", "BYOBCorkage": "yes_free", "Caters": "True", "HasTV": "None",
         "Ambience": "{u'romantic': False, 'casual': True, u'touristy': None}"}
    ) == {"WiFi": "free", "Alcohol": "full_bar", "RestaurantsAttire": "casual", "NoiseLevel": "average",
          "AgesAllowed": "21plus", "BYOBCorkage": "yes_free", "Caters": True, "HasTV": None,
          "Ambience": {"romantic": False, "casual": True, "touristy": None}}  # fmt: skip
    # (d) 2014-2016: real JSON values and nested JSON objects
    assert parse_attributes(
        {"Good For": {"dessert": False, "latenight": True}, "Price Range": 2, "Accepts Credit Cards": True}
    ) == {"Good For": {"dessert": False, "latenight": True}, "Price Range": 2, "Accepts Credit Cards": True}
    # (e) 2017-2018: a list of "Name: value" strings (the value may hold ':' itself)
    assert parse_attributes(
        ["BikeParking: True", "BusinessParking: {'garage': False, 'street': True}", "RestaurantsPriceRange2: 2",
         "WiFi: no", "Alcohol: full_bar"]
    ) == {"BikeParking": True, "BusinessParking": {"garage": False, "street": True}, "RestaurantsPriceRange2": 2,
          "WiFi": "no", "Alcohol": "full_bar"}  # fmt: skip
    assert parse_attributes([]) == {} and parse_attributes(None) == {}
    with pytest.raises(BadField, match="list entry is not 'Name: value'"):
        parse_attributes(["BikeParking True"])
    with pytest.raises(BadField, match="nested value must map names to scalars"):
        parse_attributes({"Good For": {"meals": ["lunch"]}})
    with pytest.raises(BadField, match="expected an object, a list or null, got str"):
        parse_attributes("WiFi: no")


def test_yelp_unparsable_attribute_that_is_not_a_plain_word_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for evil in (f"__import__('os').system('touch {marker}')", "os.system('x')", "{'garage': Fals",
                 "lambda: 1", "[1] * 10**9", "'" + "a"):  # fmt: skip
        with pytest.raises(BadField, match="not a Python literal"):
            parse_literal(evil, "attributes.X")
    assert not marker.exists()
    # words without quotes, brackets or parentheses are data, kept as the string itself
    assert parse_literal("  very_loud ", "attributes.NoiseLevel") == "very_loud"
    assert parse_literal("beer and wine", "attributes.Alcohol") == "beer and wine"
    assert parse_literal("", "attributes.X") == ""
    with pytest.raises(BadField, match="not a Python literal"):  # a plain word is short
        parse_literal("word " * 50, "attributes.X")


def test_yelp_review_dates_with_and_without_time():
    assert parse_date("2012-05-01") == 1335830400
    assert parse_date("2012-05-01 10:11:12") == 1335867072
    assert parse_date("2012-05-01T10:11:12") == 1335867072
    assert parse_date("2012-05-01T10:11:12Z") == 1335867072
    assert parse_date("2012-05-01T12:11:12+02:00") == 1335867072
    for bad in ("07/07/2018", "2012-05-01 10:11:12 PM", "20120501", "2012-13-01", ""):
        with pytest.raises(BadField, match="expected 'YYYY-MM-DD HH:MM:SS'"):
            parse_date(bad)


def test_yelp_older_dump_schemas_convert_with_no_bad_records(tmp_path):
    business = _jsonl(tmp_path / "business.json", [BUSINESS_2015, BUSINESS_2017, BUSINESS_PLAIN])
    review = _jsonl(tmp_path / "review.json", REVIEWS_OLD)
    items, events, report = _convert(business, review)
    assert dict(report.bad) == {}
    assert report.seen == {str(business): 3, str(review): 3}
    assert items == [
        RawItem(
            "KayYbHCt-RkbGcPdGOThNg",
            "Rocky's Lounge",
            {"category": "Bars", "city": "Carnegie", "state": "PA", "price_range": "2", "stars": "4"},
            "Rocky's Lounge. Categories: Bars, American (New), Nightlife. Accepts Credit Cards; "
            "Alcohol: full_bar; Good For: dinner, latenight; Noise Level: average; Price Range: 2",
        ),
        RawItem(
            "FYWN1wneV18bWNgQjJ2GNg",
            "Bocca Bistro",
            {"category": "Italian", "city": "Ahwatukee", "state": "AZ", "price_range": "2", "stars": "4.5"},
            "Bocca Bistro. Categories: Italian, Restaurants. Alcohol: full_bar; Ambience: casual; BikeParking; "
            "BusinessParking: street; RestaurantsPriceRange2: 2",
        ),
        RawItem(
            "PlainStrings0000000001",
            "Corner Pub",
            {"category": "Pubs", "city": "Las Vegas", "state": "NV", "price_range": "3", "stars": "3.5"},
            "Corner Pub. Categories: Pubs, Bars. Alcohol: full_bar; Ambience: casual; NoiseLevel: average; "
            "RestaurantsAttire: casual; RestaurantsPriceRange2: 3; WiFi: free",
        ),
    ]
    assert events == [
        RawEvent(
            "Xqd0DzHaiyRqVH3WRG7hzg",
            "KayYbHCt-RkbGcPdGOThNg",
            1179360000,
            "review",
            5.0,
            "Great bar food. Friendly.",
        ),
        RawEvent(
            "msQe1u7Z_XuqjGoqhB0J5g", "FYWN1wneV18bWNgQjJ2GNg", 1478722143, "review", 2.0, "Slow service."
        ),
        RawEvent("msQe1u7Z_XuqjGoqhB0J5g", "PlainStrings0000000001", 1514862245, "review", 4.0, "Good beer."),
    ]
