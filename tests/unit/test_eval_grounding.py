"""Grounding rates on crafted explanations, where the right answer is known exactly."""

from __future__ import annotations

import pytest

from seller_dist.data.schema import ExampleRecord, HistoryEvent
from seller_dist.eval.generations import Generation, SupportingEvent
from seller_dist.eval.grounding import cited_offsets, grounding


def _record(key: str, titles: list[str], cited: int | None) -> ExampleRecord:
    hist = [HistoryEvent(f"item{i}", i + 1, 100 + i, "view", title=t) for i, t in enumerate(titles)]
    meta = {}
    if cited is not None:  # cited = offset (0 = last event)
        meta = {"cited_item_id": hist[len(hist) - 1 - cited].item_id, "cited_offset": cited}
    return ExampleRecord(key, "u", "item99", 99, 200, hist, {}, "Target", "ref", "test", meta=meta)


TITLES = ["Nera Pro Yoga Mat 106", "Café Kettle 7", "Lomi Puzzle 118"]


def test_cited_offsets_are_robust_but_exact():
    h = _record("k", TITLES, None).history
    assert cited_offsets("because you viewed NERA  pro yoga mat 106!", h) == [2]
    assert cited_offsets("you liked the café kettle 7 and lomi puzzle 118", h) == [0, 1]
    assert cited_offsets("nera pro yoga mat 1060 is different", h) == []  # not inside a longer number
    assert cited_offsets("you looked at item1 recently", h) == [1]  # item id as a whole word
    assert cited_offsets("item10 is not item1", h[:1]) == []


def test_grounding_rates_exact():
    recs = [
        _record("a", TITLES, cited=0),  # cited: Lomi Puzzle 118
        _record("b", TITLES, cited=2),  # cited: Nera Pro Yoga Mat 106
        _record("c", TITLES, cited=1),  # cited: Café Kettle 7
        _record("d", TITLES, cited=None),  # no ground truth (non-synthetic source)
    ]
    texts = [
        "Because you just viewed Lomi Puzzle 118.",  # right event
        "Because you viewed Café Kettle 7.",  # a real event, but the wrong one
        "This item is recommended for you.",  # nothing
        "You bought Nera Pro Yoga Mat 106.",  # cites history; no ground truth to compare
    ]
    sup = [
        [
            SupportingEvent(0, "item2", TITLES[2], 0.6),
            SupportingEvent(1, "item1", TITLES[1], 0.4),
        ],  # top = cited
        [
            SupportingEvent(0, "item2", TITLES[2], 0.9),
            SupportingEvent(2, "item0", TITLES[0], 0.1),
        ],  # top wrong
        [],  # no attention recorded
        [SupportingEvent(0, "item2", TITLES[2], 1.0)],  # no ground truth
    ]
    gens = [
        Generation(r.key, "u", "item99", "ref", t, s, r.meta)
        for r, t, s in zip(recs, texts, sup, strict=True)
    ]
    g = grounding(gens, recs)
    assert g["generated"]["cites_history"]["mean"] == pytest.approx(3 / 4)
    assert g["generated"]["cites_reference_event"]["mean"] == pytest.approx(1 / 3)
    assert g["generated"]["cites_reference_event"]["n"] == 3
    assert g["generated"]["citation_precision"]["mean"] == pytest.approx(1 / 2)
    assert g["attention_top_is_cited"]["mean"] == pytest.approx(1 / 2)
    assert g["attention_top_is_cited"]["n"] == 2
    assert g["reference"]["cites_history"]["mean"] == 0.0  # "ref" names no event
