"""The example cutter: dedupe, time order, history windows, the time split, references, catalog."""

from __future__ import annotations

import re

from data_prep.examples import (
    Catalog,
    CutParams,
    cut_user_payloads,
    dedupe_and_sort,
    split_for,
)
from data_prep.sources.base import RawEvent, RawItem
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import ACTIONS
from tests.prep_sources import cut_user_examples

ITEMS = [
    RawItem("a", "Alpha Lamp", {"category": "home", "brand": "acme"}),
    RawItem("b", "Beta Novel", {"category": "books", "brand": "penguin"}),
    RawItem("c", "Gamma Lamp", {"category": "home", "brand": "globex"}),
    RawItem("d", "Delta Novel", {"category": "books", "brand": "acme"}),
]


def ev(item: str, ts: int, action: str = "view", text: str | None = None) -> RawEvent:
    return RawEvent("u1", item, ts, action, text=text)


def test_catalog_indices_sorted_and_event_only_items_have_no_metadata():
    cat = Catalog.build(list(reversed(ITEMS)), {"zz", "a", "0x"})
    assert [(i.item_id, i.item_idx) for i in cat.items.values()] == [
        ("0x", 1),
        ("a", 2),
        ("b", 3),
        ("c", 4),
        ("d", 5),
        ("zz", 6),
    ]
    assert not cat["zz"].has_metadata and cat["zz"].attributes == {} and cat["zz"].title == ""
    assert cat["a"].has_metadata and cat["a"].title == "Alpha Lamp"
    assert cat.display_title("zz") == "item zz"


def test_dedupe_counts_duplicates_and_sort_is_stable():
    report = BadRecordReport()
    evs = [ev("a", 30), ev("b", 10), ev("c", 10), ev("b", 10), ev("b", 10, "click")]
    out = dedupe_and_sort("u1", evs, report)
    assert [(e.item_id, e.timestamp, e.action) for e in out] == [
        ("b", 10, "view"),
        ("c", 10, "view"),
        ("b", 10, "click"),
        ("a", 30, "view"),
    ]
    assert report.bad == {"event: duplicate event": 1}
    assert report.samples[0]["file"] == "user u1" and report.samples[0]["field"] == "event"


def test_split_rule_by_number_of_examples():
    assert [split_for(i, 1) for i in range(1)] == ["train"]
    assert [split_for(i, 2) for i in range(2)] == ["train", "test"]
    assert [split_for(i, 3) for i in range(3)] == ["train", "valid", "test"]
    assert [split_for(i, 5) for i in range(5)] == ["train", "train", "train", "valid", "test"]


def test_cut_windows_most_recent_last_and_time_split():
    cat = Catalog.build(ITEMS)
    evs = [
        ev(i, ts, text=f"review {ts}")
        for i, ts in zip("abcdabcd", [50, 10, 20, 30, 40, 60, 70, 80], strict=True)
    ]
    recs = cut_user_examples("u1", evs, cat, CutParams(max_history=3, min_history=2), BadRecordReport())
    # sorted times: 10 20 30 40 50 60 70 80 -> targets from the 3rd event on
    assert [r.timestamp for r in recs] == [30, 40, 50, 60, 70, 80]
    assert [r.split for r in recs] == ["train"] * 4 + ["valid", "test"]
    last = recs[-1]
    assert [h.timestamp for h in last.history] == [50, 60, 70]  # previous 3, most recent last
    assert [h.item_idx for h in last.history] == [cat[h.item_id].item_idx for h in last.history]
    assert [h.timestamp for h in recs[0].history] == [10, 20]
    assert last.explanation == "review 80" and last.explanation_source == "review"
    assert last.item_attributes == {"category": "books", "brand": "acme"}
    assert all(re.fullmatch(r"(train|valid|test)-[0-9a-f]{16}", r.key) for r in recs)
    assert len({r.key for r in recs}) == len(recs)
    # examples_per_user keeps the last N targets, split again over those
    recs2 = cut_user_examples(
        "u1", evs, cat, CutParams(max_history=3, min_history=2, examples_per_user=2), BadRecordReport()
    )
    assert [(r.timestamp, r.split) for r in recs2] == [(70, "train"), (80, "test")]


def test_template_when_templated_and_bad_empty_text_otherwise():
    cat = Catalog.build(ITEMS)
    evs = [ev("a", 1, "purchase"), ev("b", 2), ev("c", 3, text="  ")]
    rep = BadRecordReport()
    recs = cut_user_examples("u1", evs, cat, CutParams(max_history=5, templated=True), rep)
    assert [r.explanation_source for r in recs] == ["template", "template"]
    # target c (home, globex) shares "home" with a (bought), the most recent related event
    assert recs[-1].explanation.startswith("Because you recently bought Alpha Lamp, Gamma Lamp")
    assert recs[-1].meta == {"cited_item_id": "a", "cited_offset": 1}
    assert rep.total_bad == 0
    rep2 = BadRecordReport()
    recs2 = cut_user_examples("u1", evs, cat, CutParams(max_history=5), rep2)
    assert recs2 == []  # b has no text, c has blank text: both bad on a text-bearing source
    assert rep2.bad == {"text: empty explanation text": 2}


def test_unknown_item_is_a_bad_record_and_its_payload_equals_to_json():
    cat = Catalog.build(ITEMS)
    rep = BadRecordReport()
    evs = [ev("a", 1, text="x"), ev("nope", 2, text="y"), ev("b", 3, text="z")]
    pairs = cut_user_payloads("u1", evs, cat, CutParams(max_history=5), rep)
    assert rep.bad == {"item_id: not in the item catalog": 1}
    recs = [r for r, _ in pairs]
    assert [r.item_id for r in recs] == ["b"] and [h.item_id for h in recs[0].history] == ["a"]
    assert pairs[0][1] == recs[0].to_json()


def test_payloads_equal_to_json_whatever_the_text_and_bad_history_entries_are_rejected():
    cat = Catalog.build(ITEMS)
    tricky = ['he said "history": [] twice', "naïve ✓ \\ backslash", '{"history": []}', "x"]
    evs = [ev(i, ts, text=tricky[ts % 4]) for i, ts in zip("abcdabcd", range(1, 9), strict=True)]
    rep = BadRecordReport()
    pairs = cut_user_payloads("u1", evs, cat, CutParams(max_history=3, min_history=1), rep)
    assert len(pairs) == 7 and rep.total_bad == 0
    for rec, payload in pairs:
        assert payload == rec.to_json()
    # an event that breaks schema v1 spoils its own record and exactly those whose history holds it
    evs[2].action = "teleport"  # ts 3: a target, and in the histories of the targets at ts 4, 5, 6
    rep = BadRecordReport()
    pairs = cut_user_payloads("u1", evs, cat, CutParams(max_history=3, min_history=1), rep)
    assert [r.timestamp for r, _ in pairs] == [2, 7, 8]
    assert rep.bad == {"action: 'teleport' is not one of " + str(list(ACTIONS)): 1,
                       "history[2].action: 'teleport' is not one of " + str(list(ACTIONS)): 1,
                       "history[1].action: 'teleport' is not one of " + str(list(ACTIONS)): 1,
                       "history[0].action: 'teleport' is not one of " + str(list(ACTIONS)): 1}  # fmt: skip
