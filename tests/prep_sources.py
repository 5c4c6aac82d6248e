"""Sources for the engine tests, importable by Ray workers (`tests.prep_sources`), plus small raw
inputs of every file-based source with the hard cases: bad records, ties, duplicates, many parts."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from data_prep.examples import Catalog, CutParams, Explainer, cut_user_payloads
from data_prep.sources.base import RawEvent, RawItem, ReadPart, Source
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import ExampleRecord

# the real Yelp sample: /work/shared/data/yelp from /work/main; CI keeps shared/ beside the clone
REAL_YELP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "yelp"


def cut_user_examples(
    user_id: str,
    events: Sequence[RawEvent],
    catalog: Catalog,
    params: CutParams,
    report: BadRecordReport,
    explainer: Explainer | None = None,
) -> list[ExampleRecord]:
    """All examples of one user, split and validated (bad ones reported and skipped)."""
    return [rec for rec, _ in cut_user_payloads(user_id, events, catalog, params, report, explainer)]


def real_yelp() -> Path:
    """REAL_YELP, or the test fails saying where it looked: never a skip, which would let CI pass
    without the real sample ever being read."""
    missing = [n for n in ("business.json", "review.json") if not (REAL_YELP / n).is_file()]
    if missing:
        import pytest

        pytest.fail(
            f"the real Yelp sample is missing: no {', '.join(missing)} in {REAL_YELP.resolve()} "
            "(the tests read shared/data/yelp from the folder beside the checkout; copy shared/ there)",
            pytrace=False,
        )
    return REAL_YELP


class TiedLogSource(Source):
    """Equal timestamps (order must follow the input), duplicates, a bad line and an item without
    metadata: the hard cases for a distributed re-implementation; one part, read by `events()`."""

    name = "tied"

    def __init__(self, report: BadRecordReport | None = None) -> None:
        super().__init__({"events": "events.jsonl"}, {}, report or BadRecordReport())

    def items(self):
        return iter([RawItem(f"it{i}", f"Thing {i}", {"category": f"c{i % 3}"}) for i in range(8)])

    def events(self):
        for line in range(1, 601):
            self.report.saw("events.jsonl")
            if line == 300:
                self.report.reject("events.jsonl", line, "user_id", "missing", "{}")
                continue
            item = "ghost" if line % 97 == 0 else f"it{(line * 7) % 8}"
            ts = 1_000_000 + (line // 3) * 60  # three events share each timestamp
            text = None if line % 11 == 0 else f"review {line}"
            yield RawEvent(f"u{line % 17}", item, ts, "purchase", rating=float(line % 5), text=text)
            if line % 50 == 0:
                yield RawEvent(f"u{line % 17}", item, ts, "purchase", rating=float(line % 5), text=text)


class DriverGuardSource(Source):
    """Six parts of events that refuse to be parsed in the process that built the source: run by
    engine=ray it proves the driver never reads (and so never holds) an event."""

    name = "guarded"
    templated = True

    def __init__(self, report: BadRecordReport | None = None) -> None:
        super().__init__({}, {}, report or BadRecordReport())
        self.driver_pid = os.getpid()

    def items(self):
        return iter([RawItem(f"i{i}", f"Item {i}", {"kind": f"k{i % 2}"}) for i in range(5)])

    def event_parts(self, part_bytes: int = 0) -> list[ReadPart]:
        return [ReadPart(i, "events", f"part{i}") for i in range(6)]

    def read_events(self, part: ReadPart):
        if os.getpid() == self.driver_pid:
            raise AssertionError(f"{part.url} was parsed on the driver")
        for k in range(40):
            self.report.saw(part.url)
            yield RawEvent(f"u{(part.index * 40 + k) % 23}", f"i{k % 5}", 1_000 + part.index * 100 + k)


# ------------------------------------------------------------------------------- raw inputs
def write_events_inputs(d: Path) -> dict[str, str]:
    """The same log as CSV (with bad rows), JSONL and multi-row-group Parquet, plus a catalog."""
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(900):
        rows.append(
            {
                "uid": f"u{(n * 7) % 41}",
                "sku": f"s{(n * 13) % 37}",
                "ts": 1_700_000_000 + (n // 4) * 30,  # ties
                "type": ("view", "click", "add_to_cart", "purchase")[n % 4],
                "note": "" if n % 3 else f"note {n}, with a comma",
            }
        )
    with open(d / "events.csv", "w") as f:
        f.write("uid,sku,ts,type,note\n")
        for n, r in enumerate(rows):
            if n % 150 == 7:
                f.write("broken,row\n")
            f.write(f'{r["uid"]},{r["sku"]},{r["ts"]},{r["type"]},"{r["note"]}"\n')
    with open(d / "events.jsonl", "w") as f:
        for n, r in enumerate(rows):
            if n % 200 == 9:
                f.write('{"uid": "u1", "sku": \n')
            f.write(json.dumps(r) + "\n")
    pd.DataFrame(rows).to_parquet(d / "events.parquet", row_group_size=100)
    with open(d / "items.csv", "w") as f:
        f.write("item_id,title,color\n")
        for i in range(30):
            f.write(f"s{i},Thing {i},c{i % 4}\n")
    return {"csv": str(d / "events.csv"), "jsonl": str(d / "events.jsonl"),
            "parquet": str(d / "events.parquet"), "items": str(d / "items.csv")}  # fmt: skip


def write_amazon_inputs(d: Path) -> dict[str, str]:
    """2023 and 2018 review records in one file (with a truncated line); gzipped 2014-style meta."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "reviews.jsonl", "w") as f:
        for n in range(400):
            user, asin = f"A{n % 19}", f"B{n % 23:03d}"
            if n % 2:
                rec = {"user_id": user, "parent_asin": asin, "asin": asin + "x", "rating": 1 + n % 5,
                       "timestamp": 1_600_000_000_000 + n * 1000, "title": f"t{n}", "text": f"review {n}"}  # fmt: skip
            else:
                rec = {"reviewerID": user, "asin": asin, "overall": 1.0 + n % 5, "unixReviewTime": 1_600_000_000 + n,
                       "reviewTime": "09 13, 2020", "summary": f"s{n}", "reviewText": f"text {n}"}  # fmt: skip
            f.write(json.dumps(rec) + "\n")
        f.write('{"user_id": "A1", "parent_asin": "B001", "rat')
    with gzip.open(d / "meta.jsonl.gz", "wt") as f:
        for i in range(23):
            f.write(repr({"asin": f"B{i:03d}", "title": f"Thing {i}", "price": 3.5 * i,
                          "categories": [["Toys", f"Sub{i % 3}"]], "brand": f"brand{i % 4}"}) + "\n")  # fmt: skip
    return {"reviews": str(d / "reviews.jsonl"), "meta": str(d / "meta.jsonl.gz")}


def write_recbole_inputs(d: Path) -> dict[str, str]:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "toy.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for n in range(700):
            if n % 170 == 3:
                f.write("1\t2\n")
            f.write(f"{n % 31}\t{(n * 5) % 29}\t{1 + n % 5}\t{880_000_000 + (n // 3) * 7}\n")
    with open(d / "toy.item", "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\tclass:token_seq\n")
        for i in range(29):
            f.write(f"{i}\tMovie {i}\tDrama Comedy\n")
    return {"dir": str(d), "name": "toy"}


@contextlib.contextmanager
def local_ray_for_prep(env: dict[str, str] | None = None) -> Iterator[None]:
    """A local Ray (2 CPUs, 127.0.0.1) whose workers import this checkout, for engine=ray preps."""
    import ray

    from seller_dist.ray_cluster import init_ray

    repo = str(Path(__file__).resolve().parents[1])
    init_ray(None, 2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": repo, **(env or {})}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()
