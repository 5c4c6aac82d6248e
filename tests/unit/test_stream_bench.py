"""`seller-dist bench data` on a tiny dataset: every pass reads every record; an unbuilt bench says so;
`--s3-root` measures a given object store (here the tests' moto server standing in for the user's)."""

from __future__ import annotations

import json
import os
import re
import sys
from urllib.parse import urlparse

import pytest

from seller_dist import storage
from seller_dist.bench import data as bench_data
from seller_dist.data.shards import Manifest
from seller_dist.errors import UserError


def test_data_benchmark_counts_every_record(tmp_path, tiny_tokenizer_dir):
    opts = bench_data.BenchDataOptions(
        users=30,
        shard_records=60,
        batch_size=8,
        shuffle_buffer=16,
        workers="1",
        repeats=1,
        tokenizer=tiny_tokenizer_dir,
        length_buckets=4,
        no_s3=True,
        work_dir=str(tmp_path),
    )
    result = bench_data.run_benchmark(opts, tmp_path)
    n = result["dataset"]["records"]
    assert n > 60 and result["dataset"]["shards"] == -(-n // 60)
    modes = [(r["source"], r["mode"], r["workers"]) for r in result["results"]]
    assert modes == [
        ("local", "raw_tar", 0),
        ("local", "decode_validate", 1),
        ("local", "decode_validate_collate", 1),
    ]
    for r in result["results"]:
        assert r["records"] == n and r["records_per_s"] > 0
    raw = result["results"][0]["records_per_s"]
    assert result["results"][1]["ratio_to_raw"] == round(result["results"][1]["records_per_s"] / raw, 3)
    assert "| local | decode_validate | 1 |" in bench_data.table(result)
    # padding: the same real tokens either way; bucketing by length computes fewer padded ones
    off, on = result["padding"]
    assert (off["length_buckets"], on["length_buckets"]) == (0, 4)
    assert off["real_tokens"] == on["real_tokens"] > 0
    assert on["padded_tokens"] < off["padded_tokens"]
    assert result["padding_ratio"] == round(off["padded_tokens"] / on["padded_tokens"], 3)
    assert "| 4 |" in bench_data.table(result)
    json.dumps(result)  # the JSON output is serialisable


@pytest.mark.slow
def test_data_benchmark_measures_a_given_s3_root(tmp_path, tiny_tokenizer_dir, s3_bucket, monkeypatch):
    def no_local_server():
        raise AssertionError("--s3-root must not start a local moto server")

    monkeypatch.setattr(bench_data, "local_s3_server", no_local_server)
    monkeypatch.setitem(sys.modules, "moto", None)  # the benchmark must not need moto in-process
    prefix = f"{s3_bucket}/team/bench"
    opts = bench_data.BenchDataOptions(
        users=20, shard_records=1000, batch_size=8, shuffle_buffer=16, workers="1", repeats=1,
        tokenizer=tiny_tokenizer_dir, length_buckets=4, s3_root=prefix + "/",
    )  # fmt: skip
    result = bench_data.run_benchmark(opts, tmp_path / "work")
    endpoint = urlparse(storage.endpoint_url())
    assert result["s3"] == {
        "url": prefix,
        "endpoint_host": f"{endpoint.hostname}:{endpoint.port}",
        "local_moto": False,
    }
    n = result["dataset"]["records"]
    s3_rows = [(r["mode"], r["workers"], r["records"]) for r in result["results"] if r["source"] == "s3"]
    assert s3_rows == [("raw_tar", 0, n), ("decode_validate", 1, n), ("decode_validate_collate", 1, n)]
    man = Manifest.load(prefix)  # the copy is there, every shard of it
    assert man.data["splits"]["train"]["count"] == n
    for shard in man.shards("train"):
        assert storage.exists(storage.join(prefix, shard["path"]))
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in json.dumps(result)  # the environment's credentials are nowhere in the artifact

    # a prefix that holds a dataset, a URL that is not s3://, --no-s3 with it: refused before prep
    for s3_root, no_s3, message in (
        (prefix, False, f"--s3-root {prefix} already holds a dataset (manifest.json)"),
        (str(tmp_path / "local"), False, "--s3-root must be an s3://bucket/prefix URL"),
        ("s3://", False, "--s3-root must be an s3://bucket/prefix URL"),
        (prefix, True, "--s3-root and --no-s3 contradict each other"),
    ):
        again = bench_data.BenchDataOptions(users=20, s3_root=s3_root, no_s3=no_s3)
        with pytest.raises(UserError, match="^" + re.escape(message)):
            bench_data.run_benchmark(again, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
