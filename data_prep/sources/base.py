"""What every source converter produces: normalized events and items, plus a bad-record report.

A source parses its public format and yields `RawEvent`s (one interaction each, timestamps already
in seconds) and `RawItem`s (catalog entries). Grouping, sorting, cutting into examples, time split
and shard writing are common code (data_prep/examples.py, data_prep/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from data_prep.report import BadRecordReport


@dataclass
class RawEvent:
    user_id: str
    item_id: str
    timestamp: int  # seconds since epoch (normalize ms with seller_dist.data.schema.normalize_timestamp)
    action: str = "purchase"  # one of seller_dist.data.schema.ACTIONS
    rating: float | None = None
    text: str | None = None  # review text: becomes the reference explanation when present
    aspects: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # ground truth a source knows (synthetic)


@dataclass
class RawItem:
    item_id: str
    title: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    text: str = ""  # description for the text embedding


class Source:
    """Base class of the converters. Subclasses set `name` and implement `items()` and `events()`."""

    name: str = "base"
    # True when the source has no explanation text and references are templated (recorded in manifest).
    templated: bool = False
    # What an event's text is when it becomes the reference: a user's "review", or a curated "reference".
    text_kind: str = "review"

    def __init__(self, inputs: dict[str, str], options: dict[str, Any], report: BadRecordReport):
        self.inputs = inputs
        self.options = options
        self.report = report

    def items(self) -> Iterator[RawItem]:
        raise NotImplementedError

    def events(self) -> Iterator[RawEvent]:
        """All events, any order. Bad input is reported to self.report and skipped."""
        raise NotImplementedError

    def events_by_user(self) -> Iterator[tuple[str, list[RawEvent]]] | None:
        """Optional: events already grouped by user (lets a streaming source avoid holding all events)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Source name and options for the manifest (never credentials)."""
        return {
            "name": self.name,
            "inputs": dict(self.inputs),
            "options": dict(self.options),
            "templated_explanations": self.templated,
        }
