"""Reading input records one line at a time and checking their fields, shared by the converters: every file
is streamed (local, s3://, gs:// through fsspec; gzip by the `.gz` suffix) so memory does not grow with it,
and each bad record becomes one `report.reject` call naming the file, the line and the field instead of a
crash or a silent drop.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from data_prep.sources.base import DEFAULT_PART_BYTES, RawEvent, RawItem, ReadPart, Source
from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import RecordError, normalize_timestamp


class BadField(ValueError):
    """One field of one input record is unusable; the converter reports it and skips the record."""

    def __init__(self, field_name: str, reason: str, sample: Any = None):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason
        self.sample = sample  # what the report keeps of the record (default: the raw line)


T = TypeVar("T")

# What a damaged file raises while it is decoded. A store outage is not among them: the reader
# retries it (storage.ResumableReader) and raises StorageError once the retries are spent.
DAMAGE_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def file_size(url: str, cfg: StorageConfig | None = None) -> int:
    fs, path = storage.filesystem(url, cfg)
    return int(storage.with_retries(lambda: fs.size(path), f"stat {url}", cfg))


def line_parts(
    urls: list[str], role: str, part_bytes: int, first_index: int = 0, cfg: StorageConfig | None = None
) -> list[ReadPart]:
    """Byte ranges of line-oriented files, in input order: each file in pieces of about `part_bytes`; a
    `.gz` file is one part (a gzip stream cannot be entered in the middle), and so is every file when
    part_bytes <= 0. A record belongs to the part in which its line starts.
    """
    parts: list[ReadPart] = []
    for file_index, url in enumerate(urls):
        size = file_size(url, cfg) if part_bytes > 0 and not url.endswith(".gz") else 0
        if size <= part_bytes or part_bytes <= 0:
            parts.append(ReadPart(first_index + len(parts), role, url, file_index=file_index))
            continue
        for start in range(0, size, part_bytes):
            end = min(start + part_bytes, size)
            parts.append(ReadPart(first_index + len(parts), role, url, start, end, file_index=file_index))
    return parts


def iter_part_lines(
    part: ReadPart, report: BadRecordReport, keep_ends: bool = False, cfg: StorageConfig | None = None
) -> Iterator[tuple[int | str, bytes]]:
    """(record locator, line bytes) of the lines that START in the part's byte range. The locator is the
    1-based line number in a part that starts at byte 0, else `"byte N"` (the line's offset in the file:
    a later part does not know its line count). A store outage is retried where the read stopped; a
    compressed stream that cannot be decoded to its end fails the run through `report.damaged_input`
    unless the user allowed that file, and never counts as one bad record.
    """
    url = part.url
    n = 0
    with storage.open_input(url, cfg) as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if url.endswith(".gz") else raw
        pos = part.start
        if pos > 0:
            f.seek(pos - 1)  # the line running across `start` belongs to the previous part
            pos += len(f.readline()) - 1
        try:
            for line in f:
                if part.end is not None and pos >= part.end:
                    return
                n += 1
                where: int | str = n if part.start == 0 else f"byte {pos}"
                pos += len(line)
                yield where, (line if keep_ends else line.rstrip(b"\r\n"))
        except DAMAGE_ERRORS as e:
            report.damaged_input(
                url,
                f"line {n + 1} (byte {pos} of the decompressed data)",
                f"truncated or corrupt compressed file ({type(e).__name__}: {e})",
                lines_read=n,
                decompressed_bytes_read=pos,
                compressed_bytes=raw.raw.size(),
                lost_records="unknown: a compressed stream cannot be decoded past the damage",
            )


def read_first_line(url: str, cfg: StorageConfig | None = None) -> bytes:
    """A file's first line (a CSV or atomic-file header), for parts that start later in the file."""
    with storage.open_input(url, cfg, buffer_size=64 * 1024) as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if url.endswith(".gz") else raw
        return f.readline()


def decode_utf8(raw: bytes, field_name: str = "line") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadField(field_name, "not valid UTF-8") from None


def json_error_reason(e: json.JSONDecodeError, text: str) -> str:
    """'truncated' when the line stops inside the record (an interrupted write or download)."""
    if e.msg.startswith("Unterminated string") or e.pos >= len(text.rstrip()):
        return "truncated JSON record (the line ends mid-record)"
    return f"malformed JSON ({e.msg})"


def json_object_line(raw: bytes) -> dict[str, Any]:
    """One JSON-lines record; BadField (with what the report should keep) when it is not an object."""
    text = decode_utf8(raw)
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadField("json", json_error_reason(e, text), text[:300]) from None
    if not isinstance(rec, dict):
        raise BadField("json", f"expected a JSON object, got {type(rec).__name__}", rec)
    return rec


def iter_json_part(
    part: ReadPart,
    report: BadRecordReport,
    decode: Callable[[bytes], dict[str, Any]] = json_object_line,
    cfg: StorageConfig | None = None,
) -> Iterator[tuple[int | str, dict[str, Any]]]:
    """(record locator, object) for each record line of one part; blank lines are not records.
    `decode` turns a line into its object or raises BadField (Amazon's meta: JSON or Python literal)."""
    url = part.url
    for n, raw in iter_part_lines(part, report, cfg=cfg):
        if not raw.strip():
            continue
        report.saw(url)
        try:
            rec = decode(raw)
        except BadField as e:
            sample = e.sample if e.sample is not None else raw[:300].decode("utf-8", "replace")
            report.reject(url, n, e.field, e.reason, sample)
            continue
        yield n, rec


def parse_each(
    url: str, records: Iterable[tuple[int | str, Any]], parse: Callable[[Any], T], report: BadRecordReport
) -> Iterator[T]:
    """`parse(record)` of each (record locator, record); a record it rejects with BadField is reported
    (with the record as its sample) and skipped."""
    for n, rec in records:
        try:
            yield parse(rec)
        except BadField as e:
            report.reject(url, n, e.field, e.reason, rec)


class JsonLinesSource(Source):
    """A source of JSON-lines files: the events input named `events_input` (required) and the optional
    items input named `items_input`, whose records the subclass's `parse_event(rec)` / `parse_item(rec)`
    convert (BadField for a bad one); under split=source the record field `options.split_column` names
    an event's split.
    """

    events_input = items_input = ""
    decode_item_line = staticmethod(json_object_line)  # Amazon's meta: JSON or Python-literal lines

    def item_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        url = self.inputs.get(self.items_input)
        return line_parts([url], "items", part_bytes, cfg=self.storage_cfg) if url else []

    def event_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        return line_parts([self.inputs[self.events_input]], "events", part_bytes, cfg=self.storage_cfg)

    def read_items(self, part: ReadPart) -> Iterator[RawItem]:
        records = iter_json_part(part, self.report, self.decode_item_line, self.storage_cfg)
        yield from parse_each(part.url, records, self.parse_item, self.report)

    def read_events(self, part: ReadPart) -> Iterator[RawEvent]:
        column = self.options.get("split_column")

        def parse(rec: dict[str, Any]) -> RawEvent:
            ev = self.parse_event(rec)
            if column:
                ev.split = split_value(rec.get(column), column)
            return ev

        yield from parse_each(
            part.url, iter_json_part(part, self.report, cfg=self.storage_cfg), parse, self.report
        )


# ------------------------------------------------------------------------------ field checks
_WS = re.compile(r"\s+")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_text(text: str) -> str:
    """One line of text: HTML line breaks and runs of whitespace become single spaces."""
    return _WS.sub(" ", _BR.sub(" ", text)).strip()


def check_utf8(text: str, field_name: str) -> str:
    """JSON may carry lone surrogates (\\ud83d) that cannot be written as UTF-8 later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadField(field_name, "not valid UTF-8 (lone surrogate)") from None
    return text


def require_id(rec: dict[str, Any], key: str) -> str:
    """A non-empty id; integral numbers are accepted and written as decimal strings."""
    v = rec.get(key)
    if v is None:
        raise BadField(key, "missing")
    if isinstance(v, bool):
        raise BadField(key, "expected an id (string), got a bool")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))
    if not isinstance(v, str):
        raise BadField(key, f"expected an id (string), got {type(v).__name__}")
    v = check_utf8(v.strip(), key)
    if not v:
        raise BadField(key, "empty")
    return v


def optional_str(rec: dict[str, Any], key: str) -> str:
    """A text field that may be missing or null ("" then); anything but a string is bad."""
    v = rec.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadField(key, f"expected a string, got {type(v).__name__}")
    return check_utf8(v, key)


def optional_str_list(rec: dict[str, Any], key: str) -> list[str]:
    v = rec.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise BadField(key, "expected a list of strings")
    return [check_utf8(s, key) for s in v]


def to_float(v: Any, field_name: str) -> float:
    """A finite number from a number or a numeric string."""
    if isinstance(v, bool) or v is None:
        raise BadField(field_name, f"expected a number, got {type(v).__name__}")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise BadField(field_name, "expected a number, got a non-numeric string") from None
    if isinstance(v, Decimal):  # Parquet decimal columns
        v = float(v)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadField(field_name, f"expected a finite number, got {type(v).__name__}")
    return float(v)


def rating_in_range(v: Any, field_name: str, low: float = 1.0, high: float = 5.0) -> float:
    r = to_float(v, field_name)
    if not low <= r <= high:
        raise BadField(field_name, f"outside [{low:g}, {high:g}]")
    return r


def timestamp_seconds(v: Any, field_name: str) -> int:
    """Seconds since the epoch from seconds or milliseconds (numbers or numeric strings)."""
    if v is None:
        raise BadField(field_name, "missing")
    try:
        return normalize_timestamp(v, field_name)
    except RecordError as e:
        # keep the counted reason free of the value (the record itself goes into the sample)
        reason = "negative timestamp" if e.reason.startswith("negative") else "expected epoch seconds or ms"
        raise BadField(field_name, reason) from None


# What datetime.fromisoformat reads on Python 3.10 too (3 or 6 fraction digits, offsets with a colon).
ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{3}(?:\d{3})?)?)?(?:[Zz]|[+-]\d{2}:\d{2})?)?"
)


def iso_seconds(text: str) -> float | None:
    """Seconds since the epoch of an ISO-8601 date or date-time ('Z' or an offset honoured, no zone =
    UTC, a date = UTC midnight), or None when `text` is not one."""
    if not ISO_DATE.fullmatch(text):
        return None
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def join_title_text(title: str, text: str) -> str:
    """'Title. Body' for review title + body (the title alone or the body alone when one is empty)."""
    title, text = clean_text(title), clean_text(text)
    if title and text:
        return f"{title}{'' if title[-1] in '.!?' else '.'} {text}"
    return title or text


# the values a split column may hold (case-insensitive) -> the dataset's split names
SPLIT_VALUES = {
    "train": "train",
    "trn": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
    "tst": "test",
    "testing": "test",
}


def split_value(value: Any, column: str) -> str:
    """A split cell -> "train" / "valid" / "test"; anything else is a bad record (value-free reason)."""
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        raise BadField(column, "missing split")
    split = SPLIT_VALUES.get(str(value).strip().lower())
    if split is None:
        raise BadField(column, "expected a split: train, valid or test (also trn/val/tst, validation, dev)")
    return split
