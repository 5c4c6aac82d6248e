"""prep publishing to a real S3 server (moto) and reading everything back from there."""

from __future__ import annotations

import boto3
import pytest

import data_prep.pipeline as pipeline
from seller_dist.config import PrepConfig, from_dict
from seller_dist.data.bad_records import TooManyBadRecords
from seller_dist.data.inspect import summarize
from seller_dist.data.schema import SPLITS

pytestmark = pytest.mark.slow

SMALL = {"num_users": 30, "num_items": 30, "events_per_user_min": 3, "events_per_user_max": 8}


def keys_under(endpoint: str, bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def test_prep_to_s3_and_read_back(s3_server, s3_bucket, tmp_path):
    url = f"{s3_bucket}/datasets/syn"
    cfg = from_dict(
        PrepConfig, {"output": url, "max_history": 5, "shard_max_records": 60, "source_options": SMALL}
    )
    manifest = pipeline.run_prep(cfg)
    bucket = s3_bucket.removeprefix("s3://")
    keys = keys_under(s3_server, bucket, "datasets/syn/")
    listed = {f"datasets/syn/{s['path']}" for sp in SPLITS for s in manifest["splits"][sp]["shards"]}
    listed |= {f"datasets/syn/{s['path']}" for s in manifest["items"]["shards"]}
    assert set(keys) == listed | {"datasets/syn/manifest.json", "datasets/syn/prep_report.json"}
    summary = summarize(url)  # fetches every shard from S3, checks sha256, validates every record
    assert {s: summary["splits"][s]["records"] for s in SPLITS} == {
        s: manifest["splits"][s]["count"] for s in SPLITS
    }
    # the same data prepared locally is byte-identical shard by shard
    local = pipeline.run_prep(
        from_dict(
            PrepConfig,
            {
                "output": str(tmp_path / "l"),
                "max_history": 5,
                "shard_max_records": 60,
                "source_options": SMALL,
            },
        )
    )
    assert local["splits"] == manifest["splits"] and local["items"] == manifest["items"]
    # refusing to overwrite works on S3 too, and a failed run there leaves nothing behind
    with pytest.raises(pipeline.PrepError, match="already holds a prepared dataset"):
        pipeline.run_prep(cfg)
    bad = from_dict(
        PrepConfig,
        {
            "output": f"{s3_bucket}/datasets/bad",
            "max_history": 5,
            "shard_max_records": 20,
            "max_error_rate": 0.0,
            "source_options": SMALL,
        },
    )
    import data_prep.sources.synthetic as synthetic

    original = synthetic.SyntheticSource.user_events

    def with_duplicates(self, u):
        evs = original(self, u)
        return evs + evs[-1:] if u == 29 else evs  # one duplicate, in the LAST user: after shards exist

    synthetic.SyntheticSource.user_events = with_duplicates
    try:
        with pytest.raises(TooManyBadRecords, match="duplicate event"):
            pipeline.run_prep(bad)
    finally:
        synthetic.SyntheticSource.user_events = original
    assert keys_under(s3_server, bucket, "datasets/bad/") == []
