"""The data contract: one example record (schema v1) and one item-catalog record, validated when
written (data_prep) and when read (stream); a bad record raises `RecordError` naming the shard, the
record key and the field. docs/data.md documents every field and the shard members.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1

# Action vocabulary shared by all sources (index 0 is padding in the model).
ACTIONS = ("view", "click", "cart", "purchase", "rate", "review")
ACTION_INDEX = {a: i + 1 for i, a in enumerate(ACTIONS)}
SPLITS = ("train", "valid", "test")
EXPLANATION_SOURCES = ("review", "template", "reference")

# Timestamps are integer seconds since the epoch. Values above this are milliseconds.
MS_THRESHOLD = 100_000_000_000  # year 5138 in seconds, 1973 in milliseconds


class RecordError(ValueError):
    """A record that breaks the contract. `where` is the shard or input file, `key` the record."""

    def __init__(self, field_name: str, reason: str, key: str | None = None, where: str | None = None):
        self.field = field_name
        self.reason = reason
        self.key = key
        self.where = where
        loc = ", ".join(p for p in (f"file {where}" if where else "", f"record {key}" if key else "") if p)
        super().__init__(f"{loc + ': ' if loc else ''}field '{field_name}': {reason}")


def normalize_timestamp(ts: Any, field_name: str = "timestamp") -> int:
    """Seconds since the epoch from seconds or milliseconds (int, float or numeric string)."""
    if isinstance(ts, bool):
        raise RecordError(field_name, f"expected a number of seconds, got {ts!r}")
    if isinstance(ts, str):
        try:
            ts = float(ts)
        except ValueError:
            raise RecordError(field_name, f"expected a number of seconds, got {ts!r}") from None
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise RecordError(field_name, f"expected a number of seconds, got {ts!r}")
    if ts >= MS_THRESHOLD:
        ts = ts / 1000.0
    if ts < 0:
        raise RecordError(field_name, f"negative timestamp {ts!r}")
    return int(ts)


@dataclass
class HistoryEvent:
    item_id: str
    item_idx: int  # 1-based index into the item catalog (0 = padding)
    timestamp: int  # seconds
    action: str  # one of ACTIONS
    rating: float | None = None
    title: str = ""  # item title, for the text prompt
    review: str | None = None  # optional review snippet


@dataclass
class ExampleRecord:
    """One (history, target) example: what the model reads and the explanation it should write."""

    key: str
    user_id: str
    item_id: str
    item_idx: int
    timestamp: int
    history: list[HistoryEvent]  # most recent last, at most max_history long
    item_attributes: dict[str, str]  # field -> value (category, brand, price_bucket, ...)
    item_title: str
    explanation: str  # the reference explanation
    split: str  # train | valid | test
    explanation_source: str = "review"  # review | template | reference
    aspects: list[str] = field(default_factory=list)
    rating: float | None = None
    action: str = "purchase"
    # Source-specific ground truth used by evaluation (e.g. synthetic: index in history that the
    # reference cites). Free-form but JSON-serialisable.
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode("utf-8")

    @staticmethod
    def from_dict(d: dict[str, Any], where: str | None = None) -> ExampleRecord:
        validate_example(d, where)
        hist = [HistoryEvent(**h) for h in d["history"]]
        return ExampleRecord(**{**d, "history": hist})

    @staticmethod
    def from_json(data: bytes, where: str | None = None, key: str | None = None) -> ExampleRecord:
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordError("json", f"not valid UTF-8 JSON: {e}", key, where) from None
        return ExampleRecord.from_dict(d, where)


@dataclass
class ItemRecord:
    """One entry of the item catalog (the model's item vocabulary)."""

    item_id: str
    item_idx: int
    title: str
    attributes: dict[str, str]
    text: str = ""  # description used for the text embedding
    has_embedding: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode("utf-8")


_ABSENT = object()
_EXAMPLE_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    # name: (types, required)
    "key": (str, True),
    "user_id": (str, True),
    "item_id": (str, True),
    "item_idx": (int, True),
    "timestamp": (int, True),
    "history": (list, True),
    "item_attributes": (dict, True),
    "item_title": (str, True),
    "explanation": (str, True),
    "split": (str, True),
    "explanation_source": (str, False),
    "aspects": (list, False),
    "rating": ((int, float, type(None)), False),
    "action": (str, False),
    "meta": (dict, False),
}
_EVENT_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "item_id": (str, True),
    "item_idx": (int, True),
    "timestamp": (int, True),
    "action": (str, True),
    "rating": ((int, float, type(None)), False),
    "title": (str, False),
    "review": ((str, type(None)), False),
}


def _check_fields(d: dict[str, Any], spec: dict, prefix: str, key: str | None, where: str | None) -> None:
    for name, (tp, required) in spec.items():
        v = d.get(name, _ABSENT)
        if v is _ABSENT:
            if required:
                raise RecordError(f"{prefix}{name}", "missing", key, where)
            continue
        if v.__class__ is bool and (tp is int or tp is float):
            raise RecordError(f"{prefix}{name}", f"expected {tp.__name__}, got bool", key, where)
        if not isinstance(v, tp):
            tn = tp.__name__ if isinstance(tp, type) else "/".join(t.__name__ for t in tp)
            raise RecordError(
                f"{prefix}{name}", f"expected {tn}, got {type(v).__name__} {v!r:.60}", key, where
            )
    if len(d) > len(spec) or not spec.keys() >= d.keys():
        unknown = set(d) - set(spec)
        raise RecordError(f"{prefix}{sorted(unknown)[0]}", "unknown field (schema v1)", key, where)


def validate_history_event(
    h: Any, field_name: str = "history[0]", key: str | None = None, where: str | None = None
) -> None:
    """Raise RecordError for the first schema v1 violation of one history entry (its own fields)."""
    if not isinstance(h, dict):
        raise RecordError(field_name, "expected an object", key, where)
    _check_fields(h, _EVENT_FIELDS, f"{field_name}.", key, where)
    if h["action"] not in ACTION_INDEX:
        raise RecordError(
            f"{field_name}.action", f"'{h['action']}' is not one of {list(ACTIONS)}", key, where
        )
    if h["item_idx"] < 1:
        raise RecordError(f"{field_name}.item_idx", f"must be >= 1, got {h['item_idx']}", key, where)


def validate_example(d: dict[str, Any], where: str | None = None) -> None:
    """Raise RecordError for the first violation of schema v1."""
    if not isinstance(d, dict):
        raise RecordError("record", f"expected a JSON object, got {type(d).__name__}", None, where)
    key = d.get("key") if isinstance(d.get("key"), str) else None
    _check_fields(d, _EXAMPLE_FIELDS, "", key, where)
    if not d["key"]:
        raise RecordError("key", "empty", key, where)
    if d["split"] not in SPLITS:
        raise RecordError("split", f"'{d['split']}' is not one of {list(SPLITS)}", key, where)
    if d.get("explanation_source", "review") not in EXPLANATION_SOURCES:
        raise RecordError("explanation_source", f"not one of {list(EXPLANATION_SOURCES)}", key, where)
    if not d["explanation"].strip():
        raise RecordError("explanation", "empty text", key, where)
    if d["item_idx"] < 1:
        raise RecordError("item_idx", f"must be >= 1, got {d['item_idx']}", key, where)
    if d.get("action", "purchase") not in ACTION_INDEX:
        raise RecordError("action", f"'{d.get('action')}' is not one of {list(ACTIONS)}", key, where)
    for k, v in d["item_attributes"].items():
        if not isinstance(v, str):
            raise RecordError(f"item_attributes.{k}", f"expected str, got {type(v).__name__}", key, where)
    if not all(isinstance(a, str) for a in d.get("aspects", [])):
        raise RecordError("aspects", "expected a list of strings", key, where)
    prev = None
    for i, h in enumerate(d["history"]):
        validate_history_event(h, f"history[{i}]", key, where)
        if prev is not None and h["timestamp"] < prev:
            raise RecordError(f"history[{i}].timestamp", "history is not sorted oldest first", key, where)
        prev = h["timestamp"]
    if prev is not None and prev > d["timestamp"]:
        raise RecordError("timestamp", "target is older than its history (future leak)", key, where)
