"""ShardStream / RankLoader: exactly-once per epoch across ranks, equal batch counts, exact resume,
and errors that name the shard, record and field."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from seller_dist.config import StorageConfig, StreamConfig
from seller_dist.data import shards
from seller_dist.data.schema import RecordError
from seller_dist.data.shards import Manifest, ShardError
from seller_dist.data.stream import EpochPlan, RankLoader, ShardStream
from tests.conftest import make_dataset


def _loader(root, rank, world, workers=0, batch=4, buffer=8, seed=3, **kw) -> RankLoader:
    stream = ShardStream(
        root, batch_size=batch, shuffle_buffer=buffer, seed=seed, rank=rank, world_size=world, **kw
    )
    return RankLoader(stream, num_workers=workers)


def _set_epoch(loader: RankLoader, epoch: int) -> None:
    """Point the cursor at the start of `epoch` (no iterator is live here)."""
    loader.epoch, loader.batches_done = int(epoch), 0


def _shards_of_range(plan: EpochPlan) -> list[int]:
    """Shards overlapping the plan's rank's (unpadded) range, in reading order."""
    if plan.real == 0:
        return []
    lo = np.searchsorted(plan.cum, plan.start, side="right") - 1
    hi = np.searchsorted(plan.cum, plan.start + plan.real - 1, side="right") - 1
    return [int(s) for s in plan.shard_order[lo : hi + 1]]


def _epoch(loader: RankLoader) -> list[list[tuple[str, bool]]]:
    return [list(zip(b.keys, b.pad, strict=True)) for b in loader.epoch_iter()]


def _check_exactly_once(root: str, n: int, world: int, batch: int, buffer: int, epoch: int = 0, **kw) -> list:
    per_rank = []
    for r in range(world):
        ld = _loader(root, r, world, batch=batch, buffer=buffer, **kw)
        _set_epoch(ld, epoch)
        per_rank.append(_epoch(ld))
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1, f"ranks got different batch counts: {[len(b) for b in per_rank]}"
    real = Counter(k for batches in per_rank for b in batches for k, pad in b if not pad)
    assert len(real) == n and set(real.values()) == {1}, "every record exactly once across ranks"
    samples = [s for batches in per_rank for b in batches for s in b]
    per = -(-n // world)
    assert len(samples) == per * world  # every rank has ceil(N/W) samples
    assert sum(p for _, p in samples) == per * world - n
    for batches in per_rank:  # pads repeat records (of the rank's own range when it has one)
        own = {k for b in batches for k, p in b if not p}
        pads = [k for b in batches for k, p in b if p]
        assert all(k in own for k in pads) or not own
    return per_rank


@pytest.mark.parametrize(
    "n,n_shards,world,batch,buffer",
    [
        (40, 4, 2, 4, 8),
        (41, 3, 4, 5, 16),  # uneven, fewer shards than ranks
        (7, 1, 4, 2, 0),  # one shard, four ranks, no window shuffle
        (5, 2, 8, 3, 4),  # more ranks than records: empty ranges are padded
        (100, 9, 3, 7, 1000),  # window larger than a rank's range
        (64, 16, 8, 1, 3),
        (33, 5, 1, 32, 10),
    ],
)
def test_exactly_once_per_epoch_and_equal_batches(tmp_path, n, n_shards, world, batch, buffer):
    root = str(tmp_path / "ds")
    make_dataset(root, n, n_shards)
    e0 = _check_exactly_once(root, n, world, batch, buffer, epoch=0)
    e1 = _check_exactly_once(root, n, world, batch, buffer, epoch=1)
    if n > 10:
        assert e0 != e1, "a new epoch must reshuffle"
    # pure function of (seed, epoch, position): a second pass is identical
    assert _check_exactly_once(root, n, world, batch, buffer, epoch=0) == e0


@pytest.mark.parametrize(
    "n,n_shards,world,batch,groups", [(61, 4, 2, 4, 3), (40, 2, 1, 5, 8), (9, 3, 4, 2, 2)]
)
def test_length_buckets_keep_exactly_once_and_cut_batches_of_similar_length(
    tmp_path, n, n_shards, world, batch, groups
):
    from seller_dist.data.stream import length_key

    root = str(tmp_path / "ds")
    make_dataset(root, n, n_shards)
    plain = _check_exactly_once(root, n, world, batch, 8)
    bucketed = _check_exactly_once(root, n, world, batch, 8, length_buckets=groups)
    assert bucketed == _check_exactly_once(root, n, world, batch, 8, length_buckets=groups)
    for r in range(world):  # each group holds the same records as without bucketing, re-cut
        for g in range(0, len(plain[r]), groups):
            assert Counter(s for b in plain[r][g : g + groups] for s in b) == Counter(
                s for b in bucketed[r][g : g + groups] for s in b
            )
    ld = _loader(root, 0, world, batch=batch, length_buckets=groups)
    batches = list(ld.epoch_iter())
    for g in range(0, len(batches), groups):  # batches of a group are disjoint length ranges
        spans = sorted(
            (min(map(length_key, b.records)), max(map(length_key, b.records)))
            for b in batches[g : g + groups]
        )
        assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:], strict=False)), spans
    if n > 20:
        plain_order = [
            len(set(map(length_key, b.records))) for b in _loader(root, 0, world, batch=batch).epoch_iter()
        ]
        assert plain_order != [len(set(map(length_key, b.records))) for b in batches]


def test_length_buckets_resume_exactly_and_are_part_of_the_layout(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 45, 3)
    reference = _take(iter(_loader(root, 0, 1, batch=4, length_buckets=5)), 30)  # 12 batches per epoch
    for k in (0, 3, 7, 12, 13):  # inside a group, at a group boundary, at the epoch boundary
        for workers in (0, 2):
            first = _loader(root, 0, 1, batch=4, length_buckets=5, workers=workers)
            got = _take(iter(first), k)
            resumed = _loader(root, 0, 1, batch=4, length_buckets=5, workers=workers)
            resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
            assert got + _take(iter(resumed), 30 - k) == reference, (k, workers)
    state = _loader(root, 0, 1, batch=4).state_dict()
    with pytest.raises(ValueError, match=r"length_buckets is 5 now but was 0 in the checkpoint"):
        _loader(root, 0, 1, batch=4, length_buckets=5).load_state_dict(state)
    del state["length_buckets"]  # a checkpoint written before the option existed: off
    _loader(root, 0, 1, batch=4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"length_buckets must be >= 0"):
        _loader(root, 0, 1, length_buckets=-1)


def test_workers_give_the_same_batches_as_in_process(tmp_path):
    """Fewer shards than ranks x workers, uneven chunk split over workers, 1-batch chunks too."""
    root = str(tmp_path / "ds")
    make_dataset(root, 57, 3)
    for chunk in (1, 3):
        for rank in range(2):
            ref = _epoch(_loader(root, rank, 2, workers=0, batch=4, batches_per_chunk=chunk))
            got = _epoch(_loader(root, rank, 2, workers=2, batch=4, batches_per_chunk=chunk))
            assert got == ref
            assert len(ref) == 8  # ceil(ceil(57/2)/4)


def _take(it, k):
    # range first: zip must not pull a batch it will not return (that batch would count as consumed)
    return [list(zip(b.keys, b.pad, strict=True)) for _, b in zip(range(k), it, strict=False)]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_with_the_next_batch_across_epochs(tmp_path, workers):
    root = str(tmp_path / "ds")
    make_dataset(root, 30, 3)
    ref_loader = _loader(root, 1, 2, workers=0, batch=4)  # 15 samples -> 4 batches per epoch
    assert ref_loader.batches_per_epoch == 4
    reference = _take(iter(ref_loader), 11)  # almost three epochs, uninterrupted

    for k in (0, 3, 4, 6):  # 3: resume right before an epoch boundary, 4: exactly at it
        first = _loader(root, 1, 2, workers=workers, batch=4)
        got = _take(iter(first), k)
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
        assert state["epoch"] == k // 4 and state["batches_done"] == k % 4
        resumed = _loader(root, 1, 2, workers=workers, batch=4)
        resumed.load_state_dict(state)
        got += _take(iter(resumed), 11 - k)
        assert got == reference, f"resume after {k} batches"


def test_state_dict_refuses_a_changed_dataset_or_layout(tmp_path):
    root, other = str(tmp_path / "ds"), str(tmp_path / "ds2")
    make_dataset(root, 30, 3)
    make_dataset(other, 31, 3)
    ld = _loader(root, 0, 2)
    next(iter(ld))
    state = ld.state_dict()
    assert set(state) >= {
        "epoch",
        "batches_done",
        "seed",
        "world_size",
        "rank",
        "num_workers",
        "manifest_sha256",
    }
    with pytest.raises(ValueError, match=r"manifest_sha256 .* \(the dataset changed"):
        _loader(other, 0, 2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"world_size is 4 now but was 2 in the checkpoint"):
        _loader(root, 0, 4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"rank is 1 now but was 0"):
        _loader(root, 1, 2).load_state_dict(state)
    _loader(root, 0, 2, workers=2).load_state_dict(state)  # worker count may change


def test_stream_from_config_uses_its_settings(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 20, 2)
    cfg = StreamConfig(manifest=root, batch_size=6, shuffle_buffer=4, seed=9, num_workers=0)
    ld = RankLoader.from_config(cfg, rank=0, world_size=1)
    assert ld.batches_per_epoch == 4
    assert _epoch(ld) == _epoch(_loader(root, 0, 1, batch=6, buffer=4, seed=9))


# ------------------------------------------------------------------------------------------ errors
def _shard_file(root: str, i: int = 0) -> Path:
    return Path(root) / Manifest.load(root).shards("train")[i]["path"]


def test_corrupt_shard_is_named(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 20, 2)
    f = _shard_file(root, 1)
    data = bytearray(f.read_bytes())
    data[700] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"shard {f} is corrupt: sha256"):
        _epoch(_loader(root, 0, 1))
    with pytest.raises(ShardError, match=rf"shard {f} is corrupt"):  # same error out of a worker
        _epoch(_loader(root, 0, 1, workers=2))


def test_truncated_shard_is_named(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 20, 2)
    f = _shard_file(root, 0)
    f.write_bytes(f.read_bytes()[:1500])
    with pytest.raises(ShardError, match=rf"shard {f} is corrupt"):
        _epoch(_loader(root, 0, 1))
    with pytest.raises(ShardError, match=rf"shard {f} is truncated"):
        _epoch(_loader(root, 0, 1, verify_checksums=False))


def test_missing_shard_is_named(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 20, 2)
    f = _shard_file(root, 1)
    f.unlink()
    with pytest.raises(ShardError, match=rf"shard {f} is missing \(listed in the manifest\)"):
        _epoch(_loader(root, 0, 1))


def _rewrite_shard(root: str, i: int, edit) -> str:
    """Re-encode shard i with `edit(record_dict)` applied to its first record; fix the manifest."""
    man = Manifest.load(root)
    info = man.data["splits"]["train"]["shards"][i]
    f = Path(root) / info["path"]
    samples = shards.iter_tar_samples(f.read_bytes(), str(f))
    d = json.loads(samples[0]["json"])
    edit(d)
    samples[0]["json"] = json.dumps(d).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            shards._add_member(tar, f"{s['__key__']}.json", s["json"])
    data = buf.getvalue()
    f.write_bytes(data)
    import hashlib

    info["sha256"], info["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    shards.write_manifest(root, man.data)
    return samples[0]["__key__"]


def test_record_violating_the_schema_names_shard_key_and_field(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 20, 2)
    key = _rewrite_shard(root, 1, lambda d: d["history"][0].update(action="teleport"))
    f = _shard_file(root, 1)
    for workers in (0, 2):
        with pytest.raises(RecordError) as ei:
            _epoch(_loader(root, 0, 1, workers=workers))
        e = ei.value
        assert (e.where, e.key, e.field) == (str(f), key, "history[0].action")
        assert str(e) == (
            f"file {f}, record {key}: field 'history[0].action': 'teleport' is not one of "
            "['view', 'click', 'cart', 'purchase', 'rate', 'review']"
        )


def test_record_from_another_split_is_refused(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 10, 1)
    key = _rewrite_shard(root, 0, lambda d: d.update(split="test"))
    with pytest.raises(
        RecordError, match=rf"record {key}: field 'split': 'test' record in the 'train' split"
    ):
        _epoch(_loader(root, 0, 1))


class FlakyFileSystem(LocalFileSystem):
    """A local filesystem whose shard reads fail twice with a connection reset, then succeed."""

    protocol = ("flaky",)
    failures_left: dict[str, int] = {}
    calls: Counter = Counter()

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str) and path.startswith("flaky://"):
            path = path[len("flaky://") :]
        return super()._strip_protocol(path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        if str(path).endswith(".tar"):
            FlakyFileSystem.calls[path] += 1
            left = FlakyFileSystem.failures_left.setdefault(path, 2)
            if left > 0:
                FlakyFileSystem.failures_left[path] = left - 1
                raise ConnectionError("connection reset by peer")
        return super().cat_file(path, start, end, **kwargs)


def test_transient_read_errors_are_retried(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 20, 2)
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    FlakyFileSystem.failures_left.clear()
    FlakyFileSystem.calls.clear()
    cfg = StorageConfig(retries=3, retry_backoff_s=0.001)
    flaky = _loader(f"flaky://{root}", 0, 1, storage_cfg=cfg)
    assert _epoch(flaky) == _epoch(_loader(root, 0, 1))
    assert sorted(FlakyFileSystem.calls.values()) == [3, 3]  # two failures + one success per shard

    FlakyFileSystem.failures_left.clear()
    from seller_dist.storage import StorageError

    with pytest.raises(StorageError, match=r"read flaky://.*shard-00000\d\.tar: failed after 2 attempts"):
        _epoch(_loader(f"flaky://{root}", 0, 1, storage_cfg=StorageConfig(retries=1, retry_backoff_s=0.001)))


def test_a_rank_fetches_only_the_shards_its_range_overlaps(tmp_path, monkeypatch):
    from seller_dist import storage

    root = str(tmp_path / "ds")
    make_dataset(root, 80, 8)  # 10 records per shard
    real_read = storage.read_bytes_reusing_client
    fetched: list[str] = []
    monkeypatch.setattr(
        storage, "read_bytes_reusing_client", lambda url, cfg=None: fetched.append(url) or real_read(url, cfg)
    )
    for rank in range(4):
        fetched.clear()
        ld = _loader(root, rank, 4, batch=4, buffer=8)
        _epoch(ld)
        plan = ld.stream.plan(0)
        want = {ld.stream.shard_url(s) for s in _shards_of_range(plan)}
        assert set(fetched) == want and len(want) in (2, 3)  # 20 records of 8 x 10, cut anywhere
        assert len(fetched) <= len(want) + 2  # a shard is re-read at most when chunks revisit it
