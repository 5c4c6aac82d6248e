"""Streaming from a real S3 server (moto): shards readable by stock WebDataset from S3, shard errors
naming s3:// URLs, and two real gloo processes each streaming their part of a dataset written to S3."""

from __future__ import annotations

import importlib
import io
import json
import math
import os
from collections import Counter
from typing import IO, Any

import pytest

from seller_dist import storage
from seller_dist.data.shards import Manifest, ShardError
from seller_dist.data.stream import RankLoader, ShardStream
from tests.conftest import free_port, make_dataset
from tests.ranks import spawn_ranks


def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    """A WebDataset gopen handler for s3:// URLs through seller_dist.storage (WebDataset's own pipes
    to `aws s3 cp`, which needs the AWS CLI and ignores the endpoint)."""
    if mode == "rb":
        return io.BytesIO(storage.read_bytes(url))
    if mode == "wb":
        fs, path = storage.filesystem(url)
        return fs.open(path, "wb")
    raise ValueError(f"{url}: mode {mode!r} is not supported by the s3 opener (use 'rb' or 'wb')")


def register_s3_opener() -> None:
    """Make `webdataset.WebDataset("s3://...")` and `gopen("s3://...")` use `gopen_s3`."""
    # `webdataset.gopen` the attribute is the function; the dispatch table lives in the module
    schemes = importlib.import_module("webdataset.gopen").gopen_schemes
    for scheme in ("s3", "s3a"):
        schemes[scheme] = gopen_s3


def test_webdataset_reads_and_writes_s3_through_the_opener(s3_bucket):
    import webdataset as wds
    from webdataset.gopen import gopen

    root = f"{s3_bucket}/ds"
    make_dataset(root, 30, 3)
    register_s3_opener()
    urls = [storage.join(root, s["path"]) for s in Manifest.load(root).shards("train")]
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=True)]
    assert sorted(keys) == [f"train-{i:06d}" for i in range(30)]

    with gopen(f"{s3_bucket}/x/blob.bin", "wb") as f:
        f.write(b"\x00payload\xff")
    assert storage.read_bytes(f"{s3_bucket}/x/blob.bin") == b"\x00payload\xff"


def test_missing_s3_shard_is_named(s3_bucket):
    root = f"{s3_bucket}/ds"
    make_dataset(root, 12, 2)
    url = storage.join(root, Manifest.load(root).shards("train")[1]["path"])
    storage.remove(url)
    with pytest.raises(ShardError, match=rf"shard {url} is missing"):
        list(RankLoader(ShardStream(root, batch_size=4)).epoch_iter())


def _rank_main(rank: int, world: int, port: int, root: str, out_dir: str) -> None:
    """One training rank: join the gloo group, stream this rank's part from S3, gather keys."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch.distributed as dist

    code = 0
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        loader = RankLoader(ShardStream(root, batch_size=4, shuffle_buffer=6, seed=5), num_workers=2)
        batches = [list(zip(b.keys, b.pad, strict=True)) for b in loader.epoch_iter()]
        gathered: list = [None] * world
        dist.all_gather_object(gathered, {"rank": dist.get_rank(), "batches": batches})
        if rank == 0:
            with open(os.path.join(out_dir, "gathered.json"), "w") as f:
                json.dump(gathered, f)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as e:  # report, then exit without running gloo's atexit teardown
        print(f"rank {rank} failed: {e!r}", flush=True)
        code = 1
    os._exit(code)


@pytest.mark.slow
def test_two_gloo_ranks_stream_disjoint_parts_from_s3(s3_bucket, tmp_path):
    root = f"{s3_bucket}/ds"
    n = 45
    make_dataset(root, n, 3)  # 3 shards < 2 ranks x 2 loader workers
    spawn_ranks(_rank_main, (2, free_port(), root, str(tmp_path)), 2)
    gathered = json.loads((tmp_path / "gathered.json").read_text())
    assert [g["rank"] for g in gathered] == [0, 1]
    batches = [g["batches"] for g in gathered]
    assert len(batches[0]) == len(batches[1]) == 6  # ceil(ceil(45/2)/4) on every rank
    real = Counter(k for rb in batches for b in rb for k, pad in b if not pad)
    assert sorted(real) == [f"train-{i:06d}" for i in range(n)] and set(real.values()) == {1}
    assert sum(pad for rb in batches for b in rb for _, pad in b) == 1  # 46 slots for 45 records
    # each rank got exactly what the single-process stream computes for it
    for r in range(2):
        ref = RankLoader(ShardStream(root, batch_size=4, shuffle_buffer=6, seed=5, rank=r, world_size=2))
        assert [list(map(list, zip(b.keys, b.pad, strict=True))) for b in ref.epoch_iter()] == batches[r]


@pytest.mark.slow
def test_prep_writes_to_s3_and_two_gloo_ranks_stream_it_back(s3_bucket, tmp_path):
    """The whole data path on object storage: `seller-dist prep` output on S3, read by 2 real ranks."""
    from data_prep.pipeline import run_prep
    from seller_dist.config import PrepConfig, from_dict

    root = f"{s3_bucket}/prepped"
    cfg = from_dict(
        PrepConfig,
        {
            "source": "synthetic",
            "output": root,
            "shard_max_records": 97,
            "source_options": {"num_users": 30, "num_items": 40, "seed": 3},
        },
    )
    manifest = run_prep(cfg)
    n = manifest["splits"]["train"]["count"]
    assert len(manifest["splits"]["train"]["shards"]) >= 3
    spawn_ranks(_rank_main, (2, free_port(), root, str(tmp_path)), 2)
    gathered = json.loads((tmp_path / "gathered.json").read_text())
    batches = [g["batches"] for g in gathered]
    assert len(batches[0]) == len(batches[1]) == math.ceil(math.ceil(n / 2) / 4)
    real = Counter(k for rb in batches for b in rb for k, pad in b if not pad)
    # every record of the train split, as listed by a single-process full read, exactly once
    everything = [
        k
        for b in RankLoader(ShardStream(root, batch_size=64, shuffle=False)).epoch_iter()
        for k, pad in zip(b.keys, b.pad, strict=True)
        if not pad
    ]
    assert len(everything) == n
    assert sorted(real) == sorted(everything) and set(real.values()) == {1}
