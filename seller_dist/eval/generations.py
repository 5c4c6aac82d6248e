"""The generations file: one JSON line per scored example, so any metric can be recomputed later.
This module writes it and reads it back, checking every line against the contract of docs/evaluation.md ("The
generations file"): a bad line is counted and sampled with file, line and field, skipped while the bad share
stays within `max_error_rate`, and stops the read above it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.data.bad_records import BadRecordReport, TooManyBadRecords
from seller_dist.data.schema import EXPLANATION_SOURCES
from seller_dist.errors import UserError


class GenerationsError(UserError, ValueError):
    """A generations line that breaks the contract; the message names file, line and field."""

    def __init__(self, where: str, line: int | None, field_name: str, reason: str):
        self.where, self.line, self.field, self.reason = where, line, field_name, reason
        at = f"line {line}: " if line else ""
        super().__init__(f"{where}: {at}field '{field_name}': {reason}")


@dataclass
class SupportingEvent:
    offset: int  # 0 = the most recent history event (same convention as meta.cited_offset)
    item_id: str
    title: str
    weight: float


@dataclass
class Generation:
    key: str
    user_id: str
    item_id: str
    reference: str
    generated: str
    supporting_events: list[SupportingEvent] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    system: str = "seller"
    reference_source: str = ""  # the record's explanation_source ("" = not recorded: an older file)

    def to_json(self) -> str:
        d = asdict(self)
        if not d["reference_source"]:  # not recorded: the line reads as before the field existed
            del d["reference_source"]
        return json.dumps(d, ensure_ascii=False, sort_keys=True)

    def top_event(self) -> SupportingEvent | None:
        """The most attended history event (ties: the most recent)."""
        if not self.supporting_events:
            return None
        return max(self.supporting_events, key=lambda e: (e.weight, -e.offset))


_FIELDS: dict[str, type] = {
    "key": str,
    "user_id": str,
    "item_id": str,
    "reference": str,
    "generated": str,
    "supporting_events": list,
    "meta": dict,
    "system": str,
}
_OPTIONAL_FIELDS: dict[str, type] = {"reference_source": str}
_EVENT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "offset": int,
    "item_id": str,
    "title": str,
    "weight": (int, float),
}


def parse_line(text: str, where: str, line: int) -> Generation:
    """One validated Generation from one JSON line; GenerationsError names what is wrong."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenerationsError(where, line, "json", f"not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise GenerationsError(where, line, "json", f"expected an object, got {type(d).__name__}")
    for name, tp in _FIELDS.items():
        if name not in d:
            raise GenerationsError(where, line, name, "missing")
        if not isinstance(d[name], tp):
            raise GenerationsError(where, line, name, f"expected {tp.__name__}, got {type(d[name]).__name__}")
    for name, tp in _OPTIONAL_FIELDS.items():
        if name in d and not isinstance(d[name], tp):
            raise GenerationsError(where, line, name, f"expected {tp.__name__}, got {type(d[name]).__name__}")
    if d.get("reference_source", "review") not in EXPLANATION_SOURCES:
        raise GenerationsError(
            where,
            line,
            "reference_source",
            f"'{d['reference_source']}' is not one of {list(EXPLANATION_SOURCES)}",
        )
    unknown = sorted(set(d) - set(_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise GenerationsError(where, line, unknown[0], "unknown field")
    if not d["key"]:
        raise GenerationsError(where, line, "key", "empty")
    events = []
    for i, ev in enumerate(d["supporting_events"]):
        name = f"supporting_events[{i}]"
        if not isinstance(ev, dict):
            raise GenerationsError(where, line, name, f"expected an object, got {type(ev).__name__}")
        for f, tp in _EVENT_FIELDS.items():
            if f not in ev:
                raise GenerationsError(where, line, f"{name}.{f}", "missing")
            if isinstance(ev[f], bool) or not isinstance(ev[f], tp):
                raise GenerationsError(where, line, f"{name}.{f}", f"wrong type {type(ev[f]).__name__}")
        if set(ev) - set(_EVENT_FIELDS):
            raise GenerationsError(
                where, line, f"{name}.{sorted(set(ev) - set(_EVENT_FIELDS))[0]}", "unknown field"
            )
        if ev["offset"] < 0:
            raise GenerationsError(where, line, f"{name}.offset", f"must be >= 0, got {ev['offset']}")
        if not math.isfinite(ev["weight"]) or ev["weight"] < 0:
            raise GenerationsError(
                where, line, f"{name}.weight", f"must be finite and >= 0, got {ev['weight']}"
            )
        events.append(SupportingEvent(ev["offset"], ev["item_id"], ev["title"], float(ev["weight"])))
    return Generation(**{**d, "supporting_events": events})


def write_generations(url: str, gens: Iterable[Generation], storage_cfg: StorageConfig | None = None) -> int:
    """Write the JSONL (local path or object-store URL) in one piece; returns the line count."""
    lines = [g.to_json() for g in gens]
    storage.write_bytes(url, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"), storage_cfg)
    return len(lines)


def read_generations(
    url: str,
    storage_cfg: StorageConfig | None = None,
    max_error_rate: float = 0.0,
    report: BadRecordReport | None = None,
) -> list[Generation]:
    """All valid lines. Bad lines are counted into `report`; above `max_error_rate` this raises
    TooManyBadRecords (nothing is scored). A duplicate key is a bad line (each example once)."""
    try:
        data = storage.read_bytes(url, storage_cfg)
    except FileNotFoundError:
        raise FileNotFoundError(f"generations file {url} does not exist") from None
    report = report if report is not None else BadRecordReport()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenerationsError(
            url, 1 + data[: e.start].count(b"\n"), "json", f"not UTF-8: {e.reason}"
        ) from None
    gens: list[Generation] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        report.saw(url)
        try:
            g = parse_line(raw, url, n)
            if g.key in seen:
                raise GenerationsError(
                    url, n, "key", f"duplicate key '{g.key}' (first on line {seen[g.key]})"
                )
        except GenerationsError as e:
            report.reject(url, n, e.field, e.reason, raw)
            continue
        seen[g.key] = n
        gens.append(g)
    if report.total_bad and (not gens or report.error_rate > max_error_rate):
        s = report.samples[0]
        raise TooManyBadRecords(
            f"{report.total_bad} of {report.total_seen} lines of {url} are bad "
            f"({report.error_rate:.2%} > max_error_rate {max_error_rate:.2%}); first: {s['file']}: "
            f"line {s['record']}: field '{s['field']}': {s['reason']}"
        )
    if not gens:
        raise GenerationsError(url, None, "file", "no generations in the file")
    return gens
