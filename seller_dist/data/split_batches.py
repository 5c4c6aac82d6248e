"""A split read as globally planned batches: batch i is records [start, stop) of one shard, in
manifest order, whatever the number of workers. The eval job's generation and the training job's
validation both read the split this way, so their results do not depend on the worker count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from seller_dist.config import StorageConfig
from seller_dist.data.schema import ExampleRecord, RecordError
from seller_dist.data.shards import Manifest, iter_tar_samples, read_shard_bytes


@dataclass(frozen=True)
class PlannedBatch:
    """Batch `index` of the split: records [start, stop) of shard `shard` (manifest order)."""

    index: int
    shard: int
    start: int
    stop: int


def plan_batches(manifest: Manifest, split: str, batch_size: int, limit: int = 0) -> list[PlannedBatch]:
    """Every batch of the split (or of its first `limit` records in shard order)."""
    plan: list[PlannedBatch] = []
    remaining = limit if limit > 0 else None
    for s, info in enumerate(manifest.shards(split)):
        n = int(info["count"])
        if remaining is not None:
            n = min(n, remaining)
            remaining -= n
        for start in range(0, n, batch_size):
            plan.append(PlannedBatch(len(plan), s, start, min(n, start + batch_size)))
        if remaining == 0:
            break
    return plan


def shard_records(
    manifest: Manifest, info: dict[str, Any], storage_cfg: StorageConfig | None
) -> list[ExampleRecord]:
    """The validated records of one shard of the manifest (its sha256 checked), in shard order."""
    url = f"{manifest.root}/{info['path']}"
    out = []
    for sample in iter_tar_samples(read_shard_bytes(manifest.root, info, storage_cfg, verify=True), url):
        if "json" not in sample:
            raise RecordError("json", "no .json member in the shard", sample["__key__"], url)
        out.append(ExampleRecord.from_json(sample["json"], where=url, key=sample["__key__"]))
    return out


def worker_share(plan: Sequence[PlannedBatch], rank: int, world: int) -> list[PlannedBatch]:
    return list(plan[rank::world])


def read_batches(
    manifest: Manifest, split: str, batches: Sequence[PlannedBatch], storage_cfg: StorageConfig | None
) -> list[tuple[PlannedBatch, list[ExampleRecord]]]:
    """The records of each planned batch; each needed shard is read (and sha256-checked) once."""
    infos = manifest.shards(split)
    by_shard: dict[int, list[ExampleRecord]] = {}
    out = []
    for b in batches:
        if b.shard not in by_shard:  # batches come in shard order: keep one shard in memory
            by_shard = {b.shard: shard_records(manifest, infos[b.shard], storage_cfg)}
        out.append((b, by_shard[b.shard][b.start : b.stop]))
    return out
