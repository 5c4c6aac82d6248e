"""XRec release (HKUDS): total_{trn,val,tst}.csv interactions + {trn,val,tst}.pkl explanations. The .pkl
files are pickled tables read only through data_prep.safe_pickle (an allow-listed unpickler: a pickle from
the internet can run code when loaded with pickle.load); the file a pair comes from is its published split
(trn -> train, val -> valid, tst -> test), which `split: source` keeps.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any

from data_prep.examples import user_rank
from data_prep.safe_pickle import load_table
from data_prep.sources import SourceConfigError
from data_prep.sources.amazon2023 import review_time_seconds
from data_prep.sources.base import DEFAULT_PART_BYTES, RawEvent, RawItem, ReadPart, Source
from data_prep.sources.records import (
    BadField,
    check_utf8,
    clean_text,
    iso_seconds,
    require_id,
    timestamp_seconds,
)
from seller_dist import storage
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import ACTIONS

CSV_FILES = ("total_trn.csv", "total_val.csv", "total_tst.csv")  # in time order
PKL_FILES = ("trn.pkl", "val.pkl", "tst.pkl")
PKL_SPLITS = {"trn.pkl": "train", "val.pkl": "valid", "tst.pkl": "test"}  # XRec's published split
TEST_USERS_SEED = 20240601  # train_on_test_users: which users' test pairs train (fixed: one protocol)
PKL_COLUMNS = ("uid", "iid", "explanation")
TIME_REASON = "expected epoch seconds/ms, an ISO-8601 date or 'M D, YYYY'"
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")


def time_seconds(value: str, column: str = "Time") -> int:
    """A Time cell -> seconds since the epoch, whatever wrote the csv: epoch seconds or ms, an ISO-8601
    date or date-time (no zone = UTC) or Amazon's reviewTime 'M D, YYYY' ('12 5, 2015'); dates are UTC
    midnight.
    """
    s = value.strip()
    if not s:
        raise BadField(column, "missing")
    if _NUMBER.fullmatch(s):
        try:
            return timestamp_seconds(s, column)
        except BadField as e:  # '1e400' overflows to inf
            raise BadField(column, e.reason if e.reason.startswith("negative") else TIME_REASON) from None
    seconds = iso_seconds(s)  # None also for an ISO-shaped string that is no date: not 'M D, YYYY' either
    if seconds is not None:
        return timestamp_seconds(seconds, column)
    try:
        return review_time_seconds(s, column)
    except BadField:
        raise BadField(column, TIME_REASON) from None


def _cell_id(value: Any, column: str) -> str:
    return require_id({column: value.item() if hasattr(value, "item") else value}, column)


def _cell_text(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if not isinstance(value, str):
        raise BadField(column, f"expected text, got {type(value).__name__}")
    return clean_text(check_utf8(value, column))


class XRecSource(Source):
    """XRec data folder (data/amazon, data/google or data/yelp of the XRec repository): inputs `dir` with
    total_*.csv (those present, in trn, val, tst order) and tst.pkl (plus trn.pkl / val.pkl); options
    `action`, `template_missing_text`, `train_on_test_users`. Each pkl row's explanation is the reference
    text of its (uid, iid) interaction and its pkl file the event's split (RawEvent.split). Events, items,
    options and bad records: docs/sources.md, "xrec".
    """

    name = "xrec"
    text_kind = "reference"  # XRec explanations are generated references, not user reviews

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if not inputs.get("dir"):
            raise ValueError("xrec: inputs.dir is required (folder with total_*.csv and tst.pkl)")
        self.dir = inputs["dir"].rstrip("/")
        self.action = options.get("action", "review")
        # Only the pkl pairs carry an explanation; other interactions get a templated reference as
        # targets instead of being rejected (they are still history for the explained ones).
        self.templated = bool(options.get("template_missing_text", True))
        self.text_optional = not self.templated  # then only the explained pairs are targets
        if self.action not in ACTIONS:
            raise ValueError(f"xrec: options.action '{self.action}' is not one of {list(ACTIONS)}")
        self.train_on_test_users = float(options.get("train_on_test_users", 0.0))
        if not 0.0 <= self.train_on_test_users < 1.0:
            raise ValueError(
                f"xrec: options.train_on_test_users must be a fraction in [0, 1), got {self.train_on_test_users}"
            )
        self.csv_urls = [u for u in (storage.join(self.dir, f) for f in CSV_FILES) if storage.exists(u)]
        if not self.csv_urls:
            raise FileNotFoundError(f"xrec: none of {list(CSV_FILES)} found under {self.dir}")
        self.pkl_urls = [u for u in (storage.join(self.dir, f) for f in PKL_FILES) if storage.exists(u)]
        if storage.join(self.dir, "tst.pkl") not in self.pkl_urls:
            raise FileNotFoundError(f"xrec: {storage.join(self.dir, 'tst.pkl')} not found")
        self._rows: list[dict[str, Any]] | None = None

    def _pkl_rows(self, report: BadRecordReport | None = None) -> list[dict[str, Any]]:
        """Valid rows of every pkl file (small: one row per explained interaction), loaded once; their
        records are counted in `report` (default self.report): the items part counts them, and an events part
        that loads them again in another process counts into a scratch report.
        """
        if self._rows is not None:
            return self._rows
        report = self.report if report is None else report
        rows: list[dict[str, Any]] = []
        for url in self.pkl_urls:
            df = load_table(url)
            split = PKL_SPLITS[url.rsplit("/", 1)[-1]]
            missing = [c for c in PKL_COLUMNS if c not in df.columns]
            if missing:
                raise SourceConfigError(f"{url}: missing column(s) {missing}; has {list(df.columns)}")
            cols = {c: df[c].tolist() for c in df.columns if c in (*PKL_COLUMNS, "title", "item_summary")}
            for i in range(len(df)):
                report.saw(url)
                try:
                    uid = _cell_id(cols["uid"][i], "uid")
                    iid = _cell_id(cols["iid"][i], "iid")
                    explanation = _cell_text(cols["explanation"][i], "explanation")
                    if not explanation:
                        raise BadField("explanation", "empty")
                    title = _cell_text(cols["title"][i], "title") if "title" in cols else ""
                    summary = (
                        _cell_text(cols["item_summary"][i], "item_summary") if "item_summary" in cols else ""
                    )
                except BadField as e:
                    report.reject(url, f"row {i}", e.field, e.reason, {c: cols[c][i] for c in cols})
                    continue
                row_split = "train" if split == "test" and self._trains_on(uid) else split
                rows.append({"uid": uid, "iid": iid, "explanation": explanation, "title": title,
                             "summary": summary, "where": url, "row": i, "split": row_split})  # fmt: skip
        self._rows = rows
        return rows

    def _trains_on(self, uid: str) -> bool:
        """train_on_test_users: whether this tst.pkl user's pairs are train targets (a hash of the id:
        the same users on every run and engine)."""
        return user_rank(uid, TEST_USERS_SEED) < self.train_on_test_users * 2**64

    def read_items(self, part: ReadPart) -> Iterator[RawItem]:
        seen: set[str] = set()
        for r in self._pkl_rows():
            if r["iid"] in seen:
                continue
            seen.add(r["iid"])
            yield RawItem(item_id=r["iid"], title=r["title"], text=r["summary"])

    def _iter_csv(self, url: str) -> Iterator[tuple[int, dict[str, str] | None, str]]:
        with storage.open_input(url, self.storage_cfg) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
            reader = csv.reader(text)
            header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
            if header and header[0].startswith("version https://git-lfs.github.com/spec/"):
                raise SourceConfigError(
                    f"{url}: is a Git LFS pointer, not the csv: run `git lfs pull` in the clone (or download "
                    "the file itself)"
                )
            if "user" not in header or "item" not in header:
                raise SourceConfigError(f"{url}: header must name 'user' and 'item' columns (got {header})")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    yield reader.line_num, None, f"expected {len(header)} columns, got {len(row)}"
                    continue
                yield reader.line_num, dict(zip(header, row, strict=True)), ""

    def event_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> list[ReadPart]:
        """One part per csv file; without a Time column the row ordinal across files is the time, so
        each part knows how many rows the files before it hold (one counting pass, flat memory)."""
        parts: list[ReadPart] = []
        before = 0
        for i, url in enumerate(self.csv_urls):
            parts.append(ReadPart(i, "events", url, first_record=before, file_index=i))
            if i + 1 < len(self.csv_urls):
                before += sum(1 for _ in self._iter_csv(url))
        return parts

    def read_events(self, part: ReadPart) -> Iterator[RawEvent]:
        explained = {(r["uid"], r["iid"]): r for r in self._pkl_rows(BadRecordReport())}
        url = part.url
        ordinal = part.first_record
        for n, row, problem in self._iter_csv(url):
            self.report.saw(url)
            ordinal += 1
            if row is None:
                self.report.reject(url, n, "line", problem)
                continue
            try:
                user = _csv_int_id(row, "user")
                item = _csv_int_id(row, "item")
                ts = time_seconds(row["Time"], "Time") if "Time" in row else ordinal
            except BadField as e:
                self.report.reject(url, n, e.field, e.reason, row)
                continue
            ref = explained.get((user, item))
            yield RawEvent(
                user_id=user,
                item_id=item,
                timestamp=ts,
                action=self.action,
                text=ref["explanation"] if ref else None,
                split=ref["split"] if ref else None,
            )

    wants_text_pairs = True

    def after_events(self, text_pairs: set[tuple[str, str]]) -> None:
        """Explained pairs that no csv row contains are bad records (counted once every part was read)."""
        absent = [f for f in CSV_FILES if storage.join(self.dir, f) not in self.csv_urls]
        reason = "explained pair is in no total_*.csv"
        if absent:  # e.g. a release copy without its largest file: say which, it is the likely cause
            reason += f" ({', '.join(absent)} not in {self.dir})"
        for key, r in {(r["uid"], r["iid"]): r for r in self._pkl_rows(BadRecordReport())}.items():
            if key not in text_pairs:
                self.report.reject(r["where"], f"row {r['row']}", "uid,iid", reason)


def _csv_int_id(row: dict[str, str], column: str) -> str:
    """XRec ids are non-negative integers; '12' and '12.0' are the same id."""
    v = row.get(column, "").strip()
    if not v:
        raise BadField(column, "missing")
    try:
        check_utf8(v, column)
        f = float(v)
    except (BadField, ValueError):
        raise BadField(column, "expected an integer id") from None
    if not f.is_integer() or f < 0:
        raise BadField(column, "expected a non-negative integer id")
    return str(int(f))
