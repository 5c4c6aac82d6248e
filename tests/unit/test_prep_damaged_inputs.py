"""A file that cannot be read to its end is never published half-read, nor counted as one bad record.

A truncated .gz or a corrupt Parquet row group fails the prep with one line naming the file and the
place, and nothing is published; listed in `allow_damaged_inputs`, the prep publishes what could be
read and the manifest records exactly what was lost. A malformed CSV record that swallows the lines
after it counts every one of them. (Store outages: tests/integration/test_prep_store_outage.py.)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.pipeline import run_prep
from data_prep.sources.events import EventsSource
from seller_dist.config import PrepConfig
from seller_dist.data.bad_records import BadRecordReport, DamagedInputError
from tests.unit.test_cli_errors import assert_one_line_error, seller_dist

COLUMNS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "action": None}


def event_rows(n: int) -> list[dict]:
    return [
        {"user_id": f"u{i % 97}", "item_id": f"i{i % 211}", "timestamp": 1_700_000_000 + i} for i in range(n)
    ]


def truncated_csv_gz(path: Path, n: int = 24_000) -> int:
    """The first half of a gzipped events CSV (the issue's own reproduction); returns its line count."""
    body = "user_id,item_id,timestamp\n" + "".join(
        f"{r['user_id']},{r['item_id']},{r['timestamp']}\n" for r in event_rows(n)
    )
    blob = gzip.compress(body.encode())
    path.write_bytes(blob[: len(blob) // 2])
    return n + 1


def prep_cfg(path: Path, out: Path, **extra) -> PrepConfig:
    return PrepConfig(
        source="events",
        inputs={"path": str(path)},
        source_options={"columns": COLUMNS},
        output=str(out),
        max_history=5,
        **extra,
    )


def test_truncated_gz_fails_the_prep_naming_the_file_and_line_and_publishes_nothing(tmp_path):
    log = tmp_path / "events.csv.gz"
    truncated_csv_gz(log)
    with pytest.raises(DamagedInputError) as err:
        run_prep(prep_cfg(log, tmp_path / "out"))
    msg = str(err.value)
    assert msg.startswith(f"{log}: cannot be read past line ")
    assert "Compressed file ended before the end-of-stream marker was reached" in msg
    assert "allow_damaged_inputs=[events.csv.gz]" in msg
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_gz_is_one_line_from_the_cli(tmp_path):
    log = tmp_path / "events.csv.gz"
    truncated_csv_gz(log)
    cfg = tmp_path / "prep.yaml"
    cfg.write_text(
        json.dumps(
            {
                "source": "events",
                "inputs": {"path": str(log)},
                "source_options": {"columns": COLUMNS},
                "output": str(tmp_path / "out"),
            }
        )  # fmt: skip
    )
    run = seller_dist("prep", "--config", str(cfg), cwd=tmp_path)
    assert_one_line_error(run, "prep", f"{log}: cannot be read past line", "Nothing was published")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_gz_allowed_publishes_what_was_read_and_the_manifest_says_what_was_lost(tmp_path):
    log = tmp_path / "events.csv.gz"
    truncated_csv_gz(log)
    manifest = run_prep(prep_cfg(log, tmp_path / "out", allow_damaged_inputs=["events.csv.gz"]))
    [damage] = manifest["damaged_inputs"]
    read = damage["lines_read"] - 1  # the header
    assert damage["file"] == str(log) and damage["at"].startswith(f"line {damage['lines_read'] + 1} ")
    assert 0 < read < 24_000 and damage["lost_records"].startswith("unknown")
    # the events read are all there, none counted as bad
    assert manifest["stats"]["input_records"] == read and manifest["stats"]["bad_records"] == 0
    report = json.loads((tmp_path / "out" / "prep_report.json").read_text())
    assert report["damaged_inputs"] == [damage]


def write_parquet_with_corrupt_group(path: Path, corrupt: int, groups: int = 4, rows: int = 250) -> None:
    pq.write_table(pa.Table.from_pylist(event_rows(groups * rows)), path, row_group_size=rows)
    meta = pq.ParquetFile(path).metadata
    blob = bytearray(path.read_bytes())
    for c in range(meta.num_columns):  # garble every column chunk's pages of one row group
        col = meta.row_group(corrupt).column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        for i in range(start + 20, start + col.total_compressed_size - 4):
            blob[i] ^= 0x5A
    path.write_bytes(bytes(blob))


def test_corrupt_parquet_row_group_fails_the_prep_naming_the_row_group(tmp_path):
    log = tmp_path / "events.parquet"
    write_parquet_with_corrupt_group(log, corrupt=2)
    with pytest.raises(
        DamagedInputError, match=r"events\.parquet: cannot be read past row group 2 \(rows 501-750\)"
    ):
        run_prep(prep_cfg(log, tmp_path / "out"))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_corrupt_parquet_row_group_allowed_loses_exactly_its_rows_and_reads_the_next(tmp_path):
    log = tmp_path / "events.parquet"
    write_parquet_with_corrupt_group(log, corrupt=1)
    report = BadRecordReport(allow_damaged=("*.parquet",))
    events = list(EventsSource({"path": str(log)}, {"columns": COLUMNS}, report).events())
    # row groups 0, 2 and 3 whole; group 1's 250 rows lost, counted from the metadata
    assert [e.timestamp - 1_700_000_000 for e in events] == [*range(250), *range(500, 1000)]
    assert report.damaged == [
        {
            "file": str(log),
            "at": "row group 1 (rows 251-500)",
            "reason": report.damaged[0]["reason"],
            "lost_records": 250,
        }
    ]
    assert report.damaged[0]["reason"].startswith("unreadable Parquet data (")
    assert not report.bad and report.total_seen == 750

    manifest = run_prep(prep_cfg(log, tmp_path / "out", allow_damaged_inputs=["events.parquet"]))
    assert manifest["damaged_inputs"] == report.damaged
    assert manifest["stats"]["input_records"] == 750


def test_a_stray_csv_quote_counts_every_line_it_swallowed(tmp_path):
    lines = ["user_id,item_id,timestamp"] + [f"u{i},i{i},{1_700_000_000 + i}" for i in range(100)]
    lines[31] = 'u30,"i30,1700000030'  # the quote never closes: the reader runs on to the end
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    report = BadRecordReport()
    events = list(EventsSource({"path": str(tmp_path / "log.csv")}, {"columns": COLUMNS}, report).events())
    assert len(events) == 30  # lines 2-31
    assert report.total_bad == 70 and report.total_seen == 100  # lines 32-101: one record each
