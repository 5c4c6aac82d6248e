"""Generic event logs, what platform teams actually have: Parquet, CSV/TSV or JSONL files with a column
mapping (PrepConfig.events_columns) from their names to ours, picked by suffix (`.gz` for the text
formats) and streamed in bounded memory: Parquet one record batch at a time, text one line at a time.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timezone
from typing import Any

from data_prep.sources import SourceConfigError
from data_prep.sources.base import DEFAULT_PART_BYTES, RawEvent, RawItem, ReadPart, Source
from data_prep.sources.records import (
    DAMAGE_ERRORS,
    BadField,
    check_utf8,
    clean_text,
    iter_json_part,
    iter_part_lines,
    line_parts,
    parse_each,
    read_first_line,
    split_value,
    timestamp_seconds,
    to_float,
)
from seller_dist import storage
from seller_dist.config import EventsColumnsConfig, StorageConfig
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import ACTIONS

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
MAX_CSV_FIELD = 16 * 1024 * 1024


def format_of(url: str) -> str:
    name = url.rsplit("/", 1)[-1].lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise SourceConfigError(
        f"events: cannot tell the format of {url} from its suffix; use one of {sorted(FORMATS)} "
        "(.gz allowed for CSV/JSONL) or set source_options.format"
    )


def expand_inputs(pattern: str) -> list[str]:
    """One file, or every file matching a glob (local or object store), in sorted order."""
    if not any(ch in pattern for ch in "*?["):
        if not storage.exists(pattern):
            raise FileNotFoundError(f"events: input {pattern} does not exist")
        return [pattern]
    fs, path = storage.filesystem(pattern)
    found = sorted(fs.glob(path))
    if not found:
        raise FileNotFoundError(f"events: no file matches {pattern}")
    if storage.protocol_of(pattern) == "file":
        return found
    return [fs.unstrip_protocol(p) for p in found]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def parse_id(v: Any, column: str, role: str) -> str:
    if _missing(v):
        raise BadField(column, f"missing {role} id")
    if isinstance(v, bool):
        raise BadField(column, f"expected a {role} id, got a bool")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not v.is_integer():
            raise BadField(column, f"expected a {role} id, got a fractional number")
        return str(int(v))
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            raise BadField(column, "not valid UTF-8") from None
    if not isinstance(v, str):
        raise BadField(column, f"expected a {role} id, got {type(v).__name__}")
    return check_utf8(v.strip(), column)


def parse_time(v: Any, column: str) -> int:
    """Seconds from epoch seconds/ms (numbers or numeric strings), ISO-8601 strings, datetimes or dates;
    ISO strings and datetimes without a zone are read as UTC, dates as UTC midnight.
    """
    if _missing(v):
        raise BadField(column, "missing timestamp")
    if isinstance(v, datetime):
        dt = v if v.tzinfo else v.replace(tzinfo=timezone.utc)
        return timestamp_seconds(dt.timestamp(), column)
    if isinstance(v, date):  # a Parquet date column: midnight UTC
        return parse_time(datetime(v.year, v.month, v.day, tzinfo=timezone.utc), column)
    if isinstance(v, str):
        s = check_utf8(v.strip(), column)
        try:
            float(s)
        except ValueError:
            try:
                dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
            except ValueError:
                raise BadField(column, "expected epoch seconds/ms or an ISO-8601 date-time") from None
            return parse_time(dt, column)
        return timestamp_seconds(s, column)
    return timestamp_seconds(v, column)


class EventsSource(Source):
    """Generic event logs (Parquet / CSV / TSV / JSONL, `.gz` for the text formats): inputs `path` (a file
    or a glob) and optional `items` (catalog tables); options `columns` (the pipeline's events_columns),
    `action_aliases`, `default_action`, `format`, `batch_size`, `template_missing_text`, `item_columns`. A
    CSV/Parquet file that lacks a mapped column stops the run (a mapping error, not bad data). Defaults,
    timestamps, ids and bad records: docs/sources.md, "events".
    """

    name = "events"

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if not inputs.get("path"):
            raise ValueError("events: inputs.path is required (a file or a glob of Parquet/CSV/JSONL files)")
        cols = options.get("columns") or {}
        self.columns = cols if isinstance(cols, EventsColumnsConfig) else EventsColumnsConfig(**cols)
        aliases = {str(k).strip().lower(): str(v) for k, v in (options.get("action_aliases") or {}).items()}
        bad = {k: v for k, v in aliases.items() if v not in ACTIONS}
        if bad:
            raise ValueError(
                f"events: action_aliases map to unknown actions {bad}; use one of {list(ACTIONS)}"
            )
        self.actions = {a: a for a in ACTIONS} | aliases
        self.default_action = options.get("default_action", "purchase")
        if self.default_action not in ACTIONS:
            raise ValueError(f"events: default_action '{self.default_action}' is not one of {list(ACTIONS)}")
        self.format = options.get("format")
        self.batch_size = int(options.get("batch_size", 65536))
        ic = {"item": "item_id", "title": "title", "text": None, "attributes": None}
        ic.update(options.get("item_columns") or {})
        unknown = set(ic) - {"item", "title", "text", "attributes"}
        if unknown:
            raise ValueError(
                f"events: unknown item_columns keys {sorted(unknown)}; use item, title, text, attributes"
            )
        self.item_columns = ic
        # Logs are mostly views/clicks without text: those targets get a templated reference.
        self.templated = bool(options.get("template_missing_text", True))
        self.text_optional = not self.templated  # then only events with text are targets
        self.split_column = options.get("split_column")  # split=source: the column naming each event's split

    def required_columns(self) -> list[str]:
        c = self.columns
        return [n for n in (c.user, c.item, c.timestamp, c.action, c.rating, c.text, self.split_column) if n]

    def parse_row(self, row: dict[str, Any]) -> RawEvent:
        c = self.columns
        user = parse_id(row.get(c.user), c.user, "user")
        item = parse_id(row.get(c.item), c.item, "item")
        ts = parse_time(row.get(c.timestamp), c.timestamp)
        action = self.default_action
        if c.action:
            raw = row.get(c.action)
            if _missing(raw):
                raise BadField(c.action, "missing action")
            action = self.actions.get(check_utf8(str(raw), c.action).strip().lower())
            if action is None:
                raise BadField(
                    c.action, f"unknown action {raw!r:.40}; known {list(ACTIONS)} (add it to action_aliases)"
                )
        rating = None
        if c.rating and not _missing(row.get(c.rating)):
            rating = to_float(row[c.rating], c.rating)
        text = None
        if c.text and not _missing(row.get(c.text)):
            v = row[c.text]
            if not isinstance(v, str):
                raise BadField(c.text, f"expected text, got {type(v).__name__}")
            text = clean_text(check_utf8(v, c.text)) or None
        split = split_value(row.get(self.split_column), self.split_column) if self.split_column else None
        return RawEvent(
            user_id=user, item_id=item, timestamp=ts, action=action, rating=rating, text=text, split=split
        )

    def _fmt(self, url: str) -> str:
        return self.format or format_of(url)

    def _parts(self, pattern: str, role: str, part_bytes: int) -> list[ReadPart]:
        parts: list[ReadPart] = []
        for file_index, url in enumerate(expand_inputs(pattern)):
            if self._fmt(url) == "parquet":
                parts += parquet_parts(url, role, part_bytes, len(parts), file_index, self.storage_cfg)
            else:
                for p in line_parts([url], role, part_bytes, len(parts), self.storage_cfg):
                    parts.append(replace(p, file_index=file_index))
        return parts

    def event_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        return self._parts(self.inputs["path"], "events", part_bytes)

    def item_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        return self._parts(self.inputs["items"], "items", part_bytes) if self.inputs.get("items") else []

    def read_events(self, part: ReadPart) -> Iterator[RawEvent]:
        rows = iter_part_rows(
            part,
            self._fmt(part.url),
            self.required_columns(),
            self.report,
            self.batch_size,
            "events_columns",
            cfg=self.storage_cfg,
        )
        yield from parse_each(part.url, rows, self.parse_row, self.report)

    def read_items(self, part: ReadPart) -> Iterator[RawItem]:
        """The optional catalog table (inputs.items); without it items come without metadata."""
        ic = self.item_columns
        named = [c for c in (ic["item"], ic["title"], ic["text"]) if c]
        attrs = ic["attributes"]
        fmt = self._fmt(part.url)
        wanted = named + list(attrs or [])
        rows = iter_part_rows(
            part,
            fmt,
            wanted,
            self.report,
            self.batch_size,
            "item_columns",
            attrs is not None,
            self.storage_cfg,
        )
        yield from parse_each(part.url, rows, lambda row: self.parse_item(row, named, attrs), self.report)

    def parse_item(self, row: dict[str, Any], named: list[str], attrs: list[str] | None) -> RawItem:
        ic = self.item_columns
        item_id = parse_id(row.get(ic["item"]), ic["item"], "item")
        fields = attrs if attrs is not None else [c for c in row if c not in named]
        attributes = {}
        for col in fields:
            v = attribute_value(row.get(col), col)
            if v:
                attributes[col] = v
        return RawItem(
            item_id=item_id,
            title=attribute_value(row.get(ic["title"]), ic["title"]) if ic["title"] else "",
            attributes=attributes,
            text=attribute_value(row.get(ic["text"]), ic["text"]) if ic["text"] else "",
        )


def attribute_value(v: Any, column: str) -> str:
    """A catalog cell as a string: scalars as written, lists joined with ', ', missing as ''."""
    if _missing(v):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (str, int, float)):
        return clean_text(check_utf8(str(v), column))
    if isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(clean_text(check_utf8(str(x), column)) for x in v if not _missing(x))
    raise BadField(column, f"expected text, a number or a list of them, got {type(v).__name__}")


def _check_header(url: str, names: list[str], wanted: list[str], role: str) -> None:
    missing = [n for n in wanted if n not in names]
    if missing:
        raise SourceConfigError(
            f"events: {url} has no column(s) {missing} named in {role}; its columns are "
            f"{names}. Fix the mapping (e.g. --set {role}.<field>=<your column>)"
        )


def parquet_parts(
    url: str, role: str, part_bytes: int, first_index: int, file_index: int, cfg: StorageConfig | None = None
) -> list[ReadPart]:
    """Runs of whole row groups of about `part_bytes` (uncompressed) each; one part when part_bytes <= 0."""
    import pyarrow.parquet as pq

    with storage.open_input(url, cfg, buffer_size=64 * 1024) as f:
        try:
            meta = pq.ParquetFile(f).metadata
        except Exception as e:
            raise SourceConfigError(f"events: {url} is not a readable Parquet file: {e}") from None
    if part_bytes <= 0 or meta.num_row_groups <= 1:
        return [ReadPart(first_index, role, url, file_index=file_index)]
    parts: list[ReadPart] = []
    start = rows_before = rows = size = 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        size += meta.row_group(g).total_byte_size
        if size >= part_bytes or g == meta.num_row_groups - 1:
            parts.append(ReadPart(first_index + len(parts), role, url, start, g + 1, rows_before, file_index))
            start, rows_before, size = g + 1, rows_before + rows, 0
            rows = 0
    return parts


def iter_part_rows(
    part: ReadPart,
    fmt: str,
    columns: list[str],
    report: BadRecordReport,
    batch_size: int,
    role: str,
    only_these: bool = True,
    cfg: StorageConfig | None = None,
) -> Iterator[tuple[int | str, dict[str, Any]]]:
    """(record locator, row) of one part of a Parquet / CSV / TSV / JSONL file; counts every record seen.
    `columns` must exist (a mapping error otherwise); Parquet reads only them when `only_these`. Parquet
    locators are row numbers in the file from 1; CSV ones file lines (header = line 1), or `"byte N"` in a
    part that starts later in the file (data_prep.sources.records.iter_part_lines).
    """
    if fmt == "parquet":
        yield from _parquet_rows(part, columns, report, batch_size, role, only_these, cfg)
    elif fmt in ("csv", "tsv"):
        yield from _csv_rows(part, "\t" if fmt == "tsv" else ",", columns, report, role, cfg)
    elif fmt == "jsonl":
        yield from iter_json_part(part, report, cfg=cfg)
    else:
        raise SourceConfigError(
            f"events: unknown format {fmt!r} for {part.url}; use parquet, csv, tsv or jsonl"
        )


def _parquet_rows(
    part: ReadPart,
    columns: list[str],
    report: BadRecordReport,
    batch_size: int,
    role: str,
    only_these: bool,
    cfg: StorageConfig | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of the part's row groups, one row group at a time: a row group that cannot be decoded
    fails the run (report.damaged_input) or, where the user allowed the file, loses exactly its
    unread rows (the metadata's row count) and the next row group is read."""
    import pyarrow.parquet as pq

    url = part.url
    with storage.open_input(url, cfg) as f:
        try:
            pf = pq.ParquetFile(f)
        except storage.StorageError:
            raise
        except Exception as e:
            raise SourceConfigError(f"events: {url} is not a readable Parquet file: {e}") from None
        names = pf.schema_arrow.names
        _check_header(url, names, columns, role)
        n = part.first_record
        end = pf.metadata.num_row_groups if part.end is None else part.end
        for group in range(part.start, end):
            in_group = pf.metadata.row_group(group).num_rows
            done = 0
            batches = pf.iter_batches(
                batch_size=batch_size, row_groups=[group], columns=columns if only_these else None
            )
            try:
                for batch in batches:
                    for row in batch.to_pylist():
                        n += 1
                        done += 1
                        report.saw(url)
                        yield n, row
            except storage.StorageError:
                raise
            except Exception as e:  # pyarrow's decode errors: OSError, ArrowInvalid, ...
                report.damaged_input(
                    url,
                    f"row group {group} (rows {n + 1}-{n + in_group - done})",
                    f"unreadable Parquet data ({type(e).__name__}: {e})",
                    lost_records=in_group - done,
                )
                n += in_group - done


def _csv_rows(
    part: ReadPart,
    delimiter: str,
    columns: list[str],
    report: BadRecordReport,
    role: str,
    cfg: StorageConfig | None = None,
) -> Iterator[tuple[int | str, dict[str, Any]]]:
    """Rows of one part of a CSV/TSV file; a quoted field may span lines only inside one part. A
    malformed record (a stray quote that runs into the lines after it) is counted once per line it
    consumed, so the error rate moves with the records it hides.
    """
    if csv.field_size_limit() < MAX_CSV_FIELD:
        csv.field_size_limit(MAX_CSV_FIELD)
    url = part.url
    try:
        header_line = read_first_line(url, cfg)
    except DAMAGE_ERRORS as e:
        raise SourceConfigError(f"events: cannot read the header of {url}: {e}") from None
    header_row = next(csv.reader([header_line.decode("utf-8", "surrogateescape")], delimiter=delimiter), [])
    header = [h.strip().lstrip("\ufeff") for h in header_row]
    _check_header(url, header, columns, role)
    where: list[int | str] = [0]
    consumed = [0]  # physical lines handed to the csv reader

    def lines() -> Iterator[str]:
        # surrogateescape: a non-UTF-8 byte spoils one field (reported), not the whole file
        for n, line in iter_part_lines(part, report, keep_ends=True, cfg=cfg):
            where[0] = n
            consumed[0] += 1
            yield line.decode("utf-8", "surrogateescape")

    it = lines()
    if part.start == 0:
        next(it, None)  # the header
    reader = csv.reader(it, delimiter=delimiter)
    while True:
        before = consumed[0]
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            spanned = max(1, consumed[0] - before)
            report.saw(url, spanned)
            report.reject(url, where[0], "line", f"malformed CSV: {e}", count=spanned)
            continue
        if not values:
            continue
        if len(values) != len(header):
            spanned = max(1, consumed[0] - before)  # a stray quote reads on into the next lines
            report.saw(url, spanned)
            got = f"expected {len(header)} fields, got {len(values)}"
            report.reject(
                url,
                where[0],
                "line",
                got + (f" across {spanned} lines" if spanned > 1 else ""),
                values,
                spanned,
            )
            continue
        report.saw(url)
        yield where[0], dict(zip(header, values, strict=True))
