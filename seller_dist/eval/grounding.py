"""Sequence grounding: does an explanation cite what the user actually did, and the right event?
An explanation cites a history event when the event's normalized title occurs in it as a whole phrase, or its
item id as a whole word; from those citations and the fusion's supporting events come cites_history,
cites_reference_event, citation_precision and attention_top_is_cited, as docs/evaluation.md defines them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from seller_dist.data.schema import ExampleRecord, HistoryEvent
from seller_dist.eval.generations import Generation
from seller_dist.eval.text_metrics import summary


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@lru_cache(maxsize=65536)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)")


def mentions(text_norm: str, phrase: str) -> bool:
    p = normalize(phrase)
    return bool(p) and _phrase_pattern(p).search(text_norm) is not None


def cited_offsets(text: str, history: Sequence[HistoryEvent]) -> list[int]:
    """Offsets (0 = most recent) of the history events the text cites by title or item id."""
    t = normalize(text)
    out = []
    for i, ev in enumerate(history):
        if mentions(t, ev.title) or mentions(t, ev.item_id):
            out.append(len(history) - 1 - i)
    return sorted(out)


def cited_item_ids(text: str, history: Sequence[HistoryEvent]) -> set[str]:
    return {history[len(history) - 1 - o].item_id for o in cited_offsets(text, history)}


def reference_event(record: ExampleRecord) -> tuple[str, int] | None:
    """(cited_item_id, cited_offset) of the reference when the source records it, else None."""
    item, off = record.meta.get("cited_item_id"), record.meta.get("cited_offset")
    if isinstance(item, str) and isinstance(off, int) and off >= 0:
        return item, off
    return None


def grounding_rates(texts: Sequence[str], records: Sequence[ExampleRecord]) -> dict[str, Any]:
    """The text-based grounding rates of one system's explanations (aligned with records)."""
    any_cite, right, precise = [], [], []
    for text, rec in zip(texts, records, strict=True):
        ids = cited_item_ids(text, rec.history)
        any_cite.append(float(bool(ids)))
        ref = reference_event(rec)
        if ref is not None:
            right.append(float(ref[0] in ids))
            if ids:
                precise.append(float(ref[0] in ids))
    out: dict[str, Any] = {"cites_history": summary(any_cite)}
    if right:
        out["cites_reference_event"] = summary(right)
        out["citation_precision"] = summary(precise)
    return out


def attention_grounding(
    gens: Sequence[Generation], records: Sequence[ExampleRecord]
) -> dict[str, Any] | None:
    """Share of examples whose most attended supporting event is the reference's cited event;
    None when no generation carries supporting events or no record names a cited event."""
    hits = []
    for g, rec in zip(gens, records, strict=True):
        ref, top = reference_event(rec), g.top_event()
        if ref is None or top is None:
            continue
        hits.append(float(top.offset == ref[1]))
    return summary(hits) if hits else None


def grounding(gens: Sequence[Generation], records: Sequence[ExampleRecord]) -> dict[str, Any]:
    """Generated and reference explanations side by side, plus attention grounding."""
    out: dict[str, Any] = {
        "generated": grounding_rates([g.generated for g in gens], records),
        "reference": grounding_rates([g.reference for g in gens], records),
    }
    att = attention_grounding(gens, records)
    if att is not None:
        out["attention_top_is_cited"] = att
    return out
