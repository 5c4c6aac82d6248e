"""`seller-dist bench data`: records/s of the shard stream, from local disk and from S3 (a moto server
it starts on 127.0.0.1, or the user's store under `--s3-root`), as a ratio to reading the same tar
bytes raw: the ratio shows what decoding, validation, batching and collation cost on top of I/O
whatever the machine. One run prepares the dataset with the real prep path, then times every
(source, mode, loader workers) over full epochs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from seller_dist import storage
from seller_dist.bench.artifact import write_artifact
from seller_dist.bench.local_services import DUMMY_S3_ENV, local_s3_server, scoped_env
from seller_dist.config import StorageConfig
from seller_dist.data.shards import Manifest
from seller_dist.errors import UserError
from seller_dist.version import provenance

LOCAL_S3_BUCKET = "bench-data"  # on the moto server the benchmark starts
LOCAL_S3_ROOT = f"s3://{LOCAL_S3_BUCKET}/ds"


@dataclass(frozen=True)
class BenchDataOptions:
    """What `seller-dist bench data` measures (the CLI's flags, dashes for underscores)."""

    users: int = 1200  # synthetic users (about 16 train records each)
    shard_records: int = 2000  # records per shard
    batch_size: int = 32
    shuffle_buffer: int = 256
    workers: str = "1,2"  # comma-separated loader worker counts to measure
    repeats: int = 3  # epochs timed per measurement (median reported)
    tokenizer: str | None = None  # local HF tokenizer dir (None: a small BPE trained on the data)
    length_buckets: int = 64  # data.length_buckets compared with 0 in the padding measurement
    no_s3: bool = False  # skip the S3 measurements
    s3_root: str | None = None  # s3://bucket/prefix of your store (None: a local moto server)
    work_dir: str | None = None  # where the dataset is prepared (None: a temp dir)
    out: str | None = None  # the JSON artifact (None: outputs/bench/bench-data-<UTC time>.json)


def prepare_dataset(out: str, users: int, shard_records: int) -> dict[str, Any]:
    from data_prep.pipeline import run_prep
    from seller_dist.config import PrepConfig

    cfg = PrepConfig(
        source="synthetic",
        output=out,
        shard_max_records=shard_records,
        source_options={"num_users": users, "num_items": max(50, users // 2)},
        overwrite=True,
    )
    return run_prep(cfg)


def copy_dataset(src: str, dst: str, cfg: StorageConfig) -> None:
    """Same bytes at `dst`: every shard and item shard, then the manifest last."""
    man = Manifest.load(src)
    paths = [s["path"] for sp in man.data["splits"].values() for s in sp["shards"]]
    paths += [s["path"] for s in man.data.get("items", {}).get("shards", [])]
    for rel in paths:
        storage.write_bytes(storage.join(dst, rel), storage.read_bytes(storage.join(src, rel)), cfg)
    storage.write_json(storage.join(dst, "manifest.json"), man.data, cfg)


def raw_tar_pass(root: str, cfg: StorageConfig | None) -> int:
    """Fetch each train shard the way the stream does and read every tar member; no decoding."""
    man = Manifest.load(root, cfg)
    n = 0
    for info in man.shards("train"):
        data = storage.read_bytes_reusing_client(storage.join(man.root, info["path"]), cfg)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar:
                f = tar.extractfile(m)
                if f is not None:
                    f.read()
                    n += 1
    return n


def stream_pass(
    root: str, cfg: StorageConfig | None, workers: int, batch_size: int, buffer: int, collate: Any
) -> int:
    from seller_dist.data.stream import RankLoader, ShardStream

    stream = ShardStream(
        Manifest.load(root, cfg), "train", batch_size, buffer, storage_cfg=cfg, collate_fn=collate
    )
    n = 0
    for b in RankLoader(stream, num_workers=workers).epoch_iter():
        n += len(b["keys"]) if isinstance(b, dict) else len(b.records)
    return n


def padding_pass(
    root: str, batch_size: int, buffer: int, collate: Any, length_buckets: int
) -> dict[str, Any]:
    """One epoch of collated batches: tokens the LLM would compute (batch x padded length) against
    real tokens. A count, not a timing: GPU attention and matmuls run over the padded tokens."""
    from seller_dist.data.stream import RankLoader, ShardStream

    stream = ShardStream(
        Manifest.load(root), "train", batch_size, buffer, collate_fn=collate, length_buckets=length_buckets
    )
    real = padded = 0
    for b in RankLoader(stream).epoch_iter():
        real += int(b["attention_mask"].sum())
        padded += int(b["attention_mask"].numel())
    return {
        "length_buckets": length_buckets,
        "real_tokens": real,
        "padded_tokens": padded,
        "real_fraction": round(real / padded, 4),
    }


def _measure(fn: Callable[[], int], repeats: int) -> dict[str, Any]:
    secs, count = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        count = fn()
        secs.append(time.perf_counter() - t0)
    med = statistics.median(secs)
    return {"records": count, "seconds": [round(s, 4) for s in secs], "records_per_s": round(count / med, 1)}


def build_collator(root: str, tokenizer_dir: str | None, work: Path) -> Any:
    from seller_dist.data.catalog import ItemCatalog
    from seller_dist.data.collate import SellerCollator

    man = Manifest.load(root)
    if tokenizer_dir is None:
        from seller_dist.model.bootstrap import dataset_texts, train_tokenizer

        tok = train_tokenizer(list(dataset_texts(root, 4000)), vocab_size=2000)
        tokenizer_dir = str(work / "tokenizer")
        tok.save_pretrained(tokenizer_dir)
    return SellerCollator.for_dataset(man.data["vocab"], ItemCatalog.load(root, man), tokenizer_dir)


def check_s3_root(opts: BenchDataOptions) -> None:
    """Refuse, before anything is prepared, an --s3-root that is not s3:// or already holds a
    dataset: the benchmark writes its own copy there and must never overwrite someone's data."""
    if opts.s3_root is None:
        return
    if opts.no_s3:
        raise UserError("--s3-root and --no-s3 contradict each other: give one of them")
    root = opts.s3_root.rstrip("/")
    if not root.startswith("s3://") or not root[len("s3://") :]:
        raise UserError(f"--s3-root must be an s3://bucket/prefix URL, got {opts.s3_root!r}")
    if storage.exists(storage.join(root, "manifest.json"), StorageConfig()):
        raise UserError(
            f"--s3-root {root} already holds a dataset (manifest.json): give a prefix without one, "
            "the benchmark copies its own dataset there"
        )


def endpoint_host(cfg: StorageConfig) -> str:
    """host[:port] of the S3 endpoint `cfg` reaches, for the artifact: never the URL's user info."""
    endpoint = storage.endpoint_url(cfg)
    if not endpoint:
        return "AWS default endpoint"
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    host = parsed.hostname or ""
    return f"{host}:{parsed.port}" if parsed.port else host


@contextlib.contextmanager
def s3_store(s3_root: str | None) -> Iterator[tuple[str, StorageConfig, bool]]:
    """(prefix to copy the dataset under, its StorageConfig, whether it is a local moto server).
    Given a prefix: the user's store as the environment configures it; else moto on 127.0.0.1
    with dummy credentials for the block."""
    if s3_root is not None:
        yield s3_root.rstrip("/"), StorageConfig(), False
        return
    with local_s3_server() as endpoint, scoped_env({**DUMMY_S3_ENV, "AWS_ENDPOINT_URL": endpoint}):
        import boto3  # with moto in the dev extra

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=LOCAL_S3_BUCKET
        )
        yield LOCAL_S3_ROOT, StorageConfig(endpoint_url=endpoint), True


def run_benchmark(opts: BenchDataOptions, work: Path) -> dict[str, Any]:
    check_s3_root(opts)
    workers = [int(w) for w in str(opts.workers).split(",") if w.strip()]
    local = str(work / "ds")
    t0 = time.perf_counter()
    man = prepare_dataset(local, opts.users, opts.shard_records)
    prep_s = time.perf_counter() - t0
    collate = build_collator(local, opts.tokenizer, work)
    train = man["splits"]["train"]
    result: dict[str, Any] = {
        "benchmark": "data",
        "provenance": provenance(),
        "dataset": {
            "records": train["count"],
            "shards": len(train["shards"]),
            "bytes": sum(s["bytes"] for s in train["shards"]),
            "prep_seconds": round(prep_s, 1),
        },
        "settings": {
            "users": opts.users,
            "batch_size": opts.batch_size,
            "shuffle_buffer": opts.shuffle_buffer,
            "repeats": opts.repeats,
        },
        "results": [],
        "s3": None,  # which store the s3 rows measured: {"url", "endpoint_host", "local_moto"}
    }
    sources: list[tuple[str, str, StorageConfig | None]] = [("local", local, None)]
    with contextlib.ExitStack() as stack:
        if not opts.no_s3:
            s3_root, s3cfg, local_moto = stack.enter_context(s3_store(opts.s3_root))
            host = endpoint_host(s3cfg)
            result["s3"] = {"url": s3_root, "endpoint_host": host, "local_moto": local_moto}
            print(f"  s3: copying the dataset to {s3_root} at {host}", file=sys.stderr, flush=True)
            copy_dataset(local, s3_root, s3cfg)
            sources.append(("s3", s3_root, s3cfg))
        for name, root, cfg in sources:
            raw = _measure(lambda root=root, cfg=cfg: raw_tar_pass(root, cfg), opts.repeats)
            result["results"].append(
                {"source": name, "mode": "raw_tar", "workers": 0, **raw, "ratio_to_raw": 1.0}
            )
            for mode, col in (("decode_validate", None), ("decode_validate_collate", collate)):
                for w in workers:
                    m = _measure(
                        lambda root=root, cfg=cfg, w=w, col=col: stream_pass(
                            root, cfg, w, opts.batch_size, opts.shuffle_buffer, col
                        ),
                        opts.repeats,
                    )
                    m["ratio_to_raw"] = round(m["records_per_s"] / raw["records_per_s"], 3)
                    result["results"].append({"source": name, "mode": mode, "workers": w, **m})
                    log_line(result["results"][-1])
    result["padding"] = [
        padding_pass(local, opts.batch_size, opts.shuffle_buffer, collate, g)
        for g in (0, opts.length_buckets)
    ]
    off, on = result["padding"]
    result["padding_ratio"] = round(off["padded_tokens"] / on["padded_tokens"], 3)
    print(
        f"  padding: real/padded tokens {off['real_fraction']:.3f} in stream order, "
        f"{on['real_fraction']:.3f} with length_buckets={on['length_buckets']} "
        f"({result['padding_ratio']:.2f}x fewer padded tokens)",
        file=sys.stderr,
        flush=True,
    )
    return result


def log_line(r: dict[str, Any]) -> None:
    print(
        f"  {r['source']:5s} {r['mode']:24s} workers={r['workers']} {r['records_per_s']:>10.0f} rec/s "
        f"({r['ratio_to_raw']:.3f} x raw)",
        file=sys.stderr,
        flush=True,
    )


def stream_table(result: dict[str, Any]) -> str:
    lines = [
        "| source | mode | loader workers | records/s | x raw tar |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['source']} | {r['mode']} | {r['workers']} | {r['records_per_s']:.0f} | {r['ratio_to_raw']:.3f} |"
        )
    return "\n".join(lines)


def padding_table(results: list[dict[str, Any]]) -> str:
    """Real against padded tokens per batch size (one row per run and length_buckets setting)."""
    lines = [
        "| batch size | length_buckets | real tokens | padded tokens | real / padded | padded tokens saved |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        off = result["padding"][0]
        for p in result["padding"]:
            saved = "" if p is off else f"{off['padded_tokens'] / p['padded_tokens']:.2f}x fewer"
            lines.append(
                f"| {result['settings']['batch_size']} | {p['length_buckets']} | {p['real_tokens']:,} | "
                f"{p['padded_tokens']:,} | {p['real_fraction']:.3f} | {saved} |"
            )
    return "\n".join(lines)


def table(result: dict[str, Any]) -> str:
    return stream_table(result) + ("\n\n" + padding_table([result]) if result.get("padding") else "")


def run(opts: BenchDataOptions) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="seller-bench-data-") as tmp:
        work = Path(opts.work_dir) if opts.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_benchmark(opts, work)
    write_artifact(result, opts.out, "bench-data")
    print(json.dumps(result, indent=2))
    print(table(result))
    return 0
