"""`seller-dist bench data` on a tiny dataset: every pass reads every record; an unbuilt bench says so."""

from __future__ import annotations

import json

from seller_dist.bench import data as bench_data


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
