"""Events as Arrow columns, spilled to user-hash partitions on local disk, so the local engine's memory is
bounded by one partition, not by the input: it appends each event to the IPC file of its user's partition
(a stable hash of the user id) and later cuts one partition at a time (the pipeline splits one over
`partition_max_events` again with another hash). engine=ray hands Ray Data the same columns, with `seq`
carrying input order across tasks.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from data_prep.sources.base import RawEvent

SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.int64()),
        ("action", pa.string()),
        ("rating", pa.float64()),  # null when the event has no rating
        ("text", pa.string()),  # null when the event has no text
        ("aspects", pa.string()),  # JSON list
        ("meta", pa.string()),  # JSON object
        ("seq", pa.int64()),  # input order: part index << 32 | position in the part
        ("split", pa.string()),  # the event's own split (split=source), null when it has none
    ]
)
COLUMNS = tuple(SCHEMA.names)
SEQ_PART_SHIFT = 32


def seq_of(part_index: int, position: int) -> int:
    return (part_index << SEQ_PART_SHIFT) | position


def partition_of(user_id: str, num_partitions: int, salt: int = 0) -> int:
    """Stable across processes and runs (Python's hash() is salted per process)."""
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass"), salt) % num_partitions


def empty_columns() -> dict[str, list]:
    return {c: [] for c in COLUMNS}


def append_event(cols: dict[str, list], ev: RawEvent, seq: int) -> None:
    cols["user_id"].append(ev.user_id)
    cols["item_id"].append(ev.item_id)
    cols["timestamp"].append(int(ev.timestamp))
    cols["action"].append(ev.action)
    cols["rating"].append(None if ev.rating is None else float(ev.rating))
    cols["text"].append(ev.text)
    cols["aspects"].append(json.dumps(list(ev.aspects)) if ev.aspects else "[]")
    cols["meta"].append(json.dumps(ev.meta, sort_keys=True) if ev.meta else "{}")
    cols["seq"].append(seq)
    cols["split"].append(ev.split)


def events_by_user(cols: dict[str, Any]) -> dict[str, list[RawEvent]]:
    """Columns (lists or arrays) -> each user's events in `seq` order (input order)."""
    n = len(cols["user_id"])
    order = sorted(range(n), key=cols["seq"].__getitem__)
    out: dict[str, list[RawEvent]] = {}
    user, item, ts, action = cols["user_id"], cols["item_id"], cols["timestamp"], cols["action"]
    rating, text, aspects, meta = cols["rating"], cols["text"], cols["aspects"], cols["meta"]
    split = cols["split"]
    for i in order:
        r = rating[i]
        ev = RawEvent(
            user_id=str(user[i]),
            item_id=str(item[i]),
            timestamp=int(ts[i]),
            action=str(action[i]),
            rating=None if _null(r) else float(r),
            text=None if _null(text[i]) else str(text[i]),
            aspects=json.loads(aspects[i]) if aspects[i] != "[]" else [],
            meta=json.loads(meta[i]) if meta[i] != "{}" else {},
            split=None if _null(split[i]) else str(split[i]),
        )
        out.setdefault(ev.user_id, []).append(ev)
    return out


def _null(v: Any) -> bool:
    """A null cell: None, or NaN where Ray's numpy batches turned a null into a float."""
    return v is None or (isinstance(v, float) and v != v)


@dataclass
class SpilledPartition:
    path: str
    rows: int
    salt: int


class PartitionSpill:
    """Appends events to `num_partitions` Arrow IPC stream files; at most `buffer_rows` rows in memory."""

    def __init__(self, directory: str, num_partitions: int, salt: int = 0, buffer_rows: int = 131_072):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.num_partitions = num_partitions
        self.salt = salt
        self.per_partition = max(256, buffer_rows // num_partitions)
        self.buffers = [empty_columns() for _ in range(num_partitions)]
        self.rows = [0] * num_partitions
        self.writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * num_partitions
        self.files: list[Any] = [None] * num_partitions

    def path(self, p: int) -> str:
        return os.path.join(self.directory, f"s{self.salt}-p{p:05d}.arrow")

    def add(self, ev: RawEvent, seq: int) -> None:
        p = partition_of(ev.user_id, self.num_partitions, self.salt)
        buf = self.buffers[p]
        append_event(buf, ev, seq)
        if len(buf["seq"]) >= self.per_partition:
            self._flush(p)

    def add_columns(self, cols: dict[str, list], rows: list[int]) -> None:
        """Rows of an existing column batch (re-partitioning)."""
        for i in rows:
            p = partition_of(cols["user_id"][i], self.num_partitions, self.salt)
            buf = self.buffers[p]
            for c in COLUMNS:
                buf[c].append(cols[c][i])
            if len(buf["seq"]) >= self.per_partition:
                self._flush(p)

    def _flush(self, p: int) -> None:
        buf = self.buffers[p]
        n = len(buf["seq"])
        if not n:
            return
        if self.writers[p] is None:
            self.files[p] = open(self.path(p), "wb")  # noqa: SIM115 - closed in close()
            self.writers[p] = pa.ipc.new_stream(self.files[p], SCHEMA)
        self.writers[p].write_batch(pa.RecordBatch.from_pydict(buf, schema=SCHEMA))
        self.rows[p] += n
        self.buffers[p] = empty_columns()

    def close(self) -> list[SpilledPartition]:
        out = []
        for p in range(self.num_partitions):
            self._flush(p)
            if self.writers[p] is not None:
                self.writers[p].close()
                self.files[p].close()
                out.append(SpilledPartition(self.path(p), self.rows[p], self.salt))
        return out


def read_partition(part: SpilledPartition) -> dict[str, list]:
    with pa.OSFile(part.path, "rb") as f:
        return pa.ipc.open_stream(f).read_all().to_pydict()


def iter_partition_batches(part: SpilledPartition) -> Iterator[dict[str, list]]:
    with pa.OSFile(part.path, "rb") as f:
        for batch in pa.ipc.open_stream(f):
            yield batch.to_pydict()
