"""Deterministic, exactly-once, resumable streaming of a split's shards into one rank: ranks that see
different numbers of batches hang collectives, and a resume cursor must be tiny and exact, so the
order is a pure function of (seed, epoch, position) and every rank gets the same number of batches
(the order, padding and guarantees: docs/streaming.md). `RankLoader` is the entry point.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from seller_dist import storage
from seller_dist.config import StorageConfig, StreamConfig
from seller_dist.data.schema import ExampleRecord, RecordError
from seller_dist.data.shards import Manifest, ShardError, iter_tar_samples, read_shard_bytes

log = logging.getLogger(__name__)

# rng stream tags: keep the three permutations independent of each other
_TAG_SHARDS, _TAG_RECORDS, _TAG_WINDOW, _TAG_BUCKETS = 0, 1, 2, 3


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


@dataclass
class RecordBatch:
    """One batch before collation: validated records and their padding flags."""

    records: list[ExampleRecord]
    pad: list[bool]
    epoch: int
    index: int  # batch index within the epoch

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.records]


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialized, else the explicit arguments."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if (rank is not None and rank != r) or (world_size is not None and world_size != w):
            raise ValueError(
                f"explicit rank/world_size ({rank}/{world_size}) disagree with torch.distributed ({r}/{w})"
            )
        return r, w
    r = 0 if rank is None else rank
    w = 1 if world_size is None else world_size
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"need 0 <= rank < world_size, got rank={r} world_size={w}")
    return r, w


class EpochPlan:
    """Where each of one rank's samples lives in one epoch (computed lazily, O(#shards) memory)."""

    def __init__(
        self,
        counts: np.ndarray,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        shuffle: bool,
        shuffle_buffer: int,
    ):
        self.seed, self.epoch, self.rank, self.shuffle = seed, epoch, rank, shuffle
        self.shuffle_buffer = shuffle_buffer
        self.counts = counts
        n_shards = len(counts)
        self.shard_order = (
            _rng(seed, epoch, _TAG_SHARDS).permutation(n_shards) if shuffle else np.arange(n_shards)
        )
        self.cum = np.concatenate([[0], np.cumsum(counts[self.shard_order])]).astype(np.int64)
        self.total = int(self.cum[-1])
        self.per_rank = math.ceil(self.total / world_size)
        self.start = rank * self.per_rank
        self.real = int(min(max(self.total - self.start, 0), self.per_rank))
        self._record_perms: dict[int, np.ndarray] = {}

    def record_perm(self, shard: int) -> np.ndarray:
        p = self._record_perms.get(shard)
        if p is None:
            n = int(self.counts[shard])
            p = (
                _rng(self.seed, self.epoch, _TAG_RECORDS, shard).permutation(n)
                if self.shuffle
                else np.arange(n)
            )
            self._record_perms[shard] = p
        return p

    def emitted(self, i0: int, i1: int) -> np.ndarray:
        """Local sample indices emitted at output positions [i0, i1) (window shuffle applied)."""
        buf = self.shuffle_buffer
        if not self.shuffle or buf <= 1:
            return np.arange(i0, i1, dtype=np.int64)
        parts = []
        for w in range(i0 // buf, (i1 - 1) // buf + 1):
            base = w * buf
            length = min(self.per_rank, base + buf) - base
            perm = _rng(self.seed, self.epoch, _TAG_WINDOW, self.rank, w).permutation(length) + base
            lo, hi = max(i0, base) - base, min(i1, base + length) - base
            parts.append(perm[lo:hi])
        return np.concatenate(parts).astype(np.int64)

    def locate(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard index, record index within the shard's tar, pad flag) of local sample indices."""
        pad = local >= self.real
        glob = self.start + local
        if self.real > 0:
            glob[pad] = self.start + (local[pad] - self.real) % self.real
        else:
            glob[pad] = (self.start + local[pad]) % self.total
        k = np.searchsorted(self.cum, glob, side="right") - 1
        offset = glob - self.cum[k]
        shard = self.shard_order[k]
        rec = np.empty_like(offset)
        for s in np.unique(shard):
            sel = shard == s
            rec[sel] = self.record_perm(int(s))[offset[sel]]
        return shard, rec, pad


@dataclass
class _WorkerFailure:
    """An exception raised in a loader worker, carried back so the main process re-raises the
    same type with the same message (torch would turn RecordError into a RuntimeError)."""

    type_name: str
    message: str
    record_fields: tuple[str, str, str | None, str | None] | None = None

    @staticmethod
    def of(exc: Exception) -> _WorkerFailure:
        rf = (exc.field, exc.reason, exc.key, exc.where) if isinstance(exc, RecordError) else None
        return _WorkerFailure(type(exc).__name__, str(exc), rf)

    def reraise(self) -> None:
        if self.record_fields is not None:
            raise RecordError(*self.record_fields)
        known = {"ShardError": ShardError, "StorageError": storage.StorageError, "ValueError": ValueError}
        raise known.get(self.type_name, RuntimeError)(
            self.message if self.type_name in known else f"{self.type_name} in loader worker: {self.message}"
        )


@dataclass
class _PackedBatch:
    """A collated batch on its way out of a loader worker, tensors as numpy arrays: torch would move
    each of a batch's dozen small tensors into a shared-memory segment of its own, which costs more."""

    data: dict[str, Any]
    tensor_keys: list[str]


def _pack(batch: Any) -> Any:
    if not isinstance(batch, dict):
        return batch
    keys = [
        k
        for k, v in batch.items()
        if isinstance(v, torch.Tensor) and v.dtype != torch.bfloat16 and not v.requires_grad
    ]
    return _PackedBatch({k: (v.numpy() if k in keys else v) for k, v in batch.items()}, keys)


def _unpack(batch: Any) -> Any:
    if not isinstance(batch, _PackedBatch):
        return batch
    return {k: (torch.from_numpy(v) if k in batch.tensor_keys else v) for k, v in batch.data.items()}


class _ShardCache:
    """Fetched and parsed shards (raw sample bytes); keeps only what the current chunk needs."""

    def __init__(self, stream: ShardStream):
        self.stream = stream
        self.samples: dict[int, list[dict[str, Any]]] = {}

    def keep(self, needed: set[int]) -> None:
        for s in list(self.samples):
            if s not in needed:
                del self.samples[s]
        for s in sorted(needed):
            if s not in self.samples:
                self.samples[s] = self.stream.read_shard(s)


class ShardStream(IterableDataset):
    """One rank's batches of a manifest split, in the order docs/streaming.md describes. Iterating it
    yields chunks (lists) of consecutive batches: `RecordBatch`es, or whatever `collate_fn(records,
    pad)` returns. Use `RankLoader` to get single batches with resume state."""

    def __init__(
        self,
        manifest: Manifest | str,
        split: str = "train",
        batch_size: int = 8,
        shuffle_buffer: int = 256,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        verify_checksums: bool = True,
        storage_cfg: StorageConfig | None = None,
        collate_fn: Callable[[list[ExampleRecord], list[bool]], Any] | None = None,
        batches_per_chunk: int | None = None,
        length_buckets: int = 0,
    ):
        super().__init__()
        self.manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest, storage_cfg)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if length_buckets < 0:
            raise ValueError(f"length_buckets must be >= 0, got {length_buckets}")
        self.length_buckets = length_buckets
        self.split = split
        self.shard_infos = self.manifest.shards(split)
        self.counts = np.array([int(s["count"]) for s in self.shard_infos], dtype=np.int64)
        if self.counts.sum() == 0:
            raise ValueError(f"{self.manifest.root}: split '{split}' has no records")
        self.batch_size, self.shuffle_buffer, self.seed = batch_size, shuffle_buffer, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.verify_checksums, self.storage_cfg = verify_checksums, storage_cfg
        self.collate_fn = collate_fn
        self.manifest_sha256 = self.manifest.sha256()
        total = int(self.counts.sum())
        self.samples_per_rank = math.ceil(total / self.world_size)
        self.batches_per_epoch = (
            self.samples_per_rank // batch_size
            if drop_last
            else math.ceil(self.samples_per_rank / batch_size)
        )
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"split '{split}' gives each of {self.world_size} ranks {self.samples_per_rank} samples, fewer "
                f"than batch_size={batch_size} with drop_last: lower batch_size or use drop_last=False"
            )
        if batches_per_chunk is None:  # about one shard's worth of batches, so workers read different shards
            batches_per_chunk = min(64, max(1, round(total / len(self.counts) / batch_size)))
        self.batches_per_chunk = batches_per_chunk
        # where iteration starts / stops; RankLoader sets these before each DataLoader pass
        self.start_epoch, self.start_batch, self.end_epoch = 0, 0, None

    # ---------------------------------------------------------------------------------- reading
    def shard_url(self, shard: int) -> str:
        return storage.join(self.manifest.root, self.shard_infos[shard]["path"])

    def read_shard(self, shard: int) -> list[dict[str, Any]]:
        """Fetch (with retries), verify and parse one shard; errors name its URL."""
        info, url = self.shard_infos[shard], self.shard_url(shard)
        data = read_shard_bytes(
            self.manifest.root,
            info,
            self.storage_cfg,
            verify=self.verify_checksums,
            read=storage.read_bytes_reusing_client,
        )
        samples = iter_tar_samples(data, url)
        if len(samples) != int(info["count"]):
            raise ShardError(f"shard {url} holds {len(samples)} records, the manifest says {info['count']}")
        return samples

    def decode(self, sample: dict[str, Any], shard: int) -> ExampleRecord:
        url, key = self.shard_url(shard), sample["__key__"]
        if "json" not in sample:
            raise RecordError("json", f"no '{key}.json' member in the shard", key, url)
        rec = ExampleRecord.from_json(sample["json"], where=url, key=key)
        if rec.key != key:
            raise RecordError("key", f"record key '{rec.key}' differs from its tar member name", key, url)
        if rec.split != self.split:
            raise RecordError("split", f"'{rec.split}' record in the '{self.split}' split", key, url)
        return rec

    def plan(self, epoch: int) -> EpochPlan:
        return EpochPlan(
            self.counts, self.seed, epoch, self.rank, self.world_size, self.shuffle, self.shuffle_buffer
        )

    def build_chunk(self, plan: EpochPlan, b0: int, b1: int, cache: _ShardCache) -> list[Any]:
        """Batches [b0, b1) of an epoch, fetched, decoded, validated and (optionally) collated."""
        if self.length_buckets:
            batches = self._bucketed_batches(plan, b0, b1, cache)
        else:
            records, pads = self._read(plan, b0, b1, cache)
            batches = []
            for b in range(b0, b1):
                lo, hi = (b - b0) * self.batch_size, min(len(records), (b - b0 + 1) * self.batch_size)
                batches.append(RecordBatch(records[lo:hi], pads[lo:hi], plan.epoch, b))
        return [self.collate_fn(b.records, b.pad) if self.collate_fn else b for b in batches]

    def _read(
        self, plan: EpochPlan, b0: int, b1: int, cache: _ShardCache
    ) -> tuple[list[ExampleRecord], list[bool]]:
        """The records (and pad flags) at the positions of batches [b0, b1), in stream order."""
        i0, i1 = b0 * self.batch_size, min(self.samples_per_rank, b1 * self.batch_size)
        shard, rec, pad = plan.locate(plan.emitted(i0, i1))
        cache.keep({int(s) for s in np.unique(shard)})
        decoded: dict[tuple[int, int], ExampleRecord] = {}
        records = []
        for s, r in zip(shard.tolist(), rec.tolist(), strict=True):
            got = decoded.get((s, r))
            if got is None:
                got = decoded[(s, r)] = self.decode(cache.samples[s][r], s)
            records.append(got)
        return records, pad.tolist()

    def _bucketed_batches(self, plan: EpochPlan, b0: int, b1: int, cache: _ShardCache) -> list[RecordBatch]:
        """Length bucketing: the batches of each group of `length_buckets` consecutive batches (a
        fixed grid, so a resumed cursor finds the same groups) are cut from the group's records
        sorted by `length_key`, then handed out in an order drawn from (seed, epoch, rank, group).
        Each batch then holds records of similar length: less padding, the same records per epoch."""
        g_size, out = self.length_buckets, []
        for g in range(b0 // g_size, (b1 - 1) // g_size + 1):
            gb0, gb1 = g * g_size, min(self.batches_per_epoch, (g + 1) * g_size)
            records, pads = self._read(plan, gb0, gb1, cache)
            order = sorted(range(len(records)), key=lambda i: (length_key(records[i]), i))
            cuts = [order[j : j + self.batch_size] for j in range(0, len(order), self.batch_size)]
            perm = _rng(self.seed, plan.epoch, _TAG_BUCKETS, self.rank, g).permutation(len(cuts))
            for b in range(max(b0, gb0), min(b1, gb1)):
                idx = cuts[int(perm[b - gb0])]
                out.append(RecordBatch([records[i] for i in idx], [pads[i] for i in idx], plan.epoch, b))
        return out

    def __iter__(self) -> Iterator[list[Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        chunks = self._chunks(worker, num_workers)
        if info is None:
            yield from chunks
            return
        try:
            for chunk in chunks:
                yield [_pack(b) for b in chunk]
        except Exception as e:  # carried to the main process with its type and message intact
            yield _WorkerFailure.of(e)

    def _chunks(self, worker: int, num_workers: int) -> Iterator[list[Any]]:
        cache = _ShardCache(self)
        epoch, batch, chunk_no = self.start_epoch, self.start_batch, 0
        while self.end_epoch is None or epoch < self.end_epoch:
            plan = self.plan(epoch)
            while batch < self.batches_per_epoch:
                end = min(self.batches_per_epoch, batch + self.batches_per_chunk)
                if chunk_no % num_workers == worker:
                    yield self.build_chunk(plan, batch, end, cache)
                chunk_no += 1
                batch = end
            epoch, batch = epoch + 1, 0

    def layout(self) -> dict[str, Any]:
        """What must be equal for a saved cursor to mean the same batches."""
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
            "manifest_sha256": self.manifest_sha256,
            "split": self.split,
            "batch_size": self.batch_size,
            "shuffle_buffer": self.shuffle_buffer,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "length_buckets": self.length_buckets,
        }


def length_key(rec: ExampleRecord) -> int:
    """Characters of the text the collate tokenizes (history titles, target title, explanation):
    a proxy for the token length, known before tokenizing."""
    return len(rec.explanation) + len(rec.item_title) + sum(len(h.title) for h in rec.history)


_LAYOUT_DEFAULTS = {"length_buckets": 0}  # keys added later: older checkpoints lack them

_RESUME_HINTS = {
    "manifest_sha256": "the dataset changed (different shards or counts); resume on the same dataset "
    "or start a fresh run",
    "world_size": "the job has a different number of ranks; the cursor belongs to the old layout",
    "rank": "this state belongs to another rank; load each rank's own data state",
}


# Loader workers are forked where possible: inside a rank started with the "spawn" method (torch
# multiprocessing.spawn) the default would be spawn too, and each worker would re-import torch and
# the trainer (15 s instead of 1 s for a small epoch here).
_DEFAULT_WORKER_START = "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def _identity(x: Any) -> Any:
    return x


class RankLoader:
    """Single batches for one rank through a torch DataLoader, with an exact resume cursor. Iterating
    yields batches forever, rolling into the next epoch (new shard order); `epoch_iter()` yields only
    the rest of the current epoch. A batch counts as consumed when it is handed out, so `state_dict()`
    taken after a training step resumes at the next batch; `num_workers` may differ on resume."""

    def __init__(
        self,
        stream: ShardStream,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        multiprocessing_context: str | None = _DEFAULT_WORKER_START,
    ):
        self.stream = stream
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.epoch = 0
        self.batches_done = 0
        self._generation = 0  # bumped when the cursor is moved by hand: live iterators stop

    @staticmethod
    def from_config(
        cfg: StreamConfig,
        rank: int | None = None,
        world_size: int | None = None,
        collate_fn: Callable[[list[ExampleRecord], list[bool]], Any] | None = None,
    ) -> RankLoader:
        cfg.validate()
        stream = ShardStream(
            Manifest.load(cfg.manifest, cfg.storage),
            split=cfg.split,
            batch_size=cfg.batch_size,
            shuffle_buffer=cfg.shuffle_buffer,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
            verify_checksums=cfg.verify_checksums,
            storage_cfg=cfg.storage,
            collate_fn=collate_fn,
            length_buckets=cfg.length_buckets,
        )
        return RankLoader(stream, num_workers=cfg.num_workers)

    @property
    def batches_per_epoch(self) -> int:
        return self.stream.batches_per_epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "num_workers": self.num_workers,
            **self.stream.layout(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` left off; a different dataset or layout is a clear error."""
        for k, now in self.stream.layout().items():
            if k not in state and k not in _LAYOUT_DEFAULTS:
                raise ValueError(f"data stream state has no '{k}': not a RankLoader.state_dict()")
            if state.get(k, _LAYOUT_DEFAULTS.get(k)) != now:
                hint = _RESUME_HINTS.get(k, f"keep {k} as it was when the checkpoint was written")
                raise ValueError(
                    f"cannot resume the data stream: {k} is {now!r} now but was "
                    f"{state.get(k, _LAYOUT_DEFAULTS.get(k))!r} in the "
                    f"checkpoint ({hint})"
                )
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if epoch < 0 or not 0 <= done < self.batches_per_epoch:
            raise ValueError(
                f"data stream state out of range: epoch={epoch} batches_done={done} "
                f"(batches per epoch: {self.batches_per_epoch})"
            )
        self.epoch, self.batches_done = epoch, done
        self._generation += 1

    def __iter__(self) -> Iterator[Any]:
        return self._iterate(one_epoch=False)

    def epoch_iter(self) -> Iterator[Any]:
        """The remaining batches of the current epoch (the cursor then points at the next epoch)."""
        return self._iterate(one_epoch=True)

    def _iterate(self, one_epoch: bool) -> Iterator[Any]:
        gen = self._generation
        self.stream.start_epoch, self.stream.start_batch = self.epoch, self.batches_done
        self.stream.end_epoch = self.epoch + 1 if one_epoch else None
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False,
            multiprocessing_context=self.multiprocessing_context if self.num_workers else None,
        )
        it = iter(loader)
        try:
            for chunk in it:
                if isinstance(chunk, _WorkerFailure):
                    chunk.reraise()
                for packed in chunk:
                    if gen != self._generation:
                        return
                    batch = _unpack(packed)
                    self.batches_done += 1
                    if self.batches_done == self.batches_per_epoch:
                        self.epoch, self.batches_done = self.epoch + 1, 0
                    yield batch
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
