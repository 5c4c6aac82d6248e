"""What every source converter produces: normalized `RawEvent`s (timestamps already in seconds) and
`RawItem`s, plus a bad-record report, read in `ReadPart`s that parse independently, so the local engine
(one after another) and engine=ray (parallel tasks) see the same parts in the same order. Grouping, cutting,
splits and shards are common code (data_prep/examples.py, data_prep/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from seller_dist.config import StorageConfig
from seller_dist.data.bad_records import BadRecordReport

DEFAULT_PART_BYTES = 16 * 1024 * 1024  # PrepConfig.read_part_bytes: bytes of a file one read task parses


@dataclass(frozen=True)
class ReadPart:
    """One independently parsable piece of a source's input: `index` is its position in input order;
    `start`/`end` a byte range [start, end) of a line-oriented file or a range of Parquet row groups
    (`end=None` reads to the end); `first_record` the number of records before it in its input (record
    numbers, XRec's row ordinal).
    """

    index: int
    role: str  # "events" or "items"
    url: str = ""
    start: int = 0
    end: int | None = None
    first_record: int = 0
    file_index: int = 0


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
    # the split the input assigns this event ("train"/"valid"/"test"; None: none): used by split=source
    split: str | None = None


@dataclass
class RawItem:
    item_id: str
    title: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    text: str = ""  # description for the text embedding


class Source:
    """Base class of the converters. Subclasses set `name` and implement either `items()` and
    `events()` (one part each: read whole by one task), or `item_parts`/`read_items` and
    `event_parts`/`read_events` (parsed in parallel by engine=ray, in bounded memory by both engines).
    """

    name: str = "base"
    # True when the source has no explanation text and references are templated (recorded in manifest).
    templated: bool = False
    # What an event's text is when it becomes the reference: a user's "review", or a curated "reference".
    text_kind: str = "review"
    # True: events without text are only history, not targets (and not bad records): text is the
    # exception in this source's input (XRec's explained pairs, a log's reviewed events)
    text_optional: bool = False

    def __init__(self, inputs: dict[str, str], options: dict[str, Any], report: BadRecordReport):
        self.inputs = inputs
        self.options = options
        self.report = report
        # how inputs are reached: endpoint, retries and backoff of a store outage (PrepConfig.storage)
        self.storage_cfg: StorageConfig | None = None

    # True: the pipeline hands `after_events` the (user, item) pairs of the events that carry text.
    wants_text_pairs: bool = False

    def item_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        return [ReadPart(0, "items")]

    def read_items(self, part: ReadPart) -> Iterator[RawItem]:
        return self.items()

    def event_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        return [ReadPart(0, "events")]

    def read_events(self, part: ReadPart) -> Iterator[RawEvent]:
        """The events of one part, in input order. Bad input is reported to self.report and skipped."""
        return self.events()

    def items(self) -> Iterator[RawItem]:
        for part in self.item_parts():
            yield from self.read_items(part)

    def events(self) -> Iterator[RawEvent]:
        """All events, in input order (part after part), then the cross-part checks."""
        pairs: set[tuple[str, str]] = set()
        for part in self.event_parts():
            for ev in self.read_events(part):
                if self.wants_text_pairs and ev.text is not None:
                    pairs.add((ev.user_id, ev.item_id))
                yield ev
        if self.wants_text_pairs:
            self.after_events(pairs)

    def after_events(self, text_pairs: set[tuple[str, str]]) -> None:
        """Cross-part checks once every event was read (only called when `wants_text_pairs`)."""

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
