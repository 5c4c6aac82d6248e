"""A store outage in the middle of a prep that reads its log from S3 (moto on 127.0.0.1 behind a TCP
proxy that resets every connection for a while): a short one is retried where the read stopped and
the dataset is record for record the undisturbed one; a long one fails the prep with one line naming
the file and the byte offset, and nothing is published. Both engines."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator

import pytest

from data_prep.pipeline import run_prep
from seller_dist import storage
from seller_dist.config import PrepConfig, StorageConfig
from tests.conftest import S3_ENV, scoped_env
from tests.flaky_proxy import FlakyProxy, flaky_proxy
from tests.integration.test_prep_ray import records_by_split
from tests.prep_sources import local_ray_for_prep

pytestmark = [pytest.mark.slow, pytest.mark.ray]

COLUMNS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "action": None}
EVENTS = 8_000


def log_blob() -> bytes:
    body = "user_id,item_id,timestamp\n" + "".join(
        f"u{i % 613},i{(i * 7919) % 1201},{1_700_000_000 + i}\n" for i in range(EVENTS)
    )
    return gzip.compress(body.encode())


# botocore's own retries off, so that an outage reaches ours (a few seconds of them otherwise)
NO_CLIENT_RETRIES = {"AWS_MAX_ATTEMPTS": "1"}


@pytest.fixture(scope="module")
def proxy(s3_server: str) -> Iterator[FlakyProxy]:
    with flaky_proxy(s3_server) as p, scoped_env(NO_CLIENT_RETRIES):
        yield p


@pytest.fixture(scope="module")
def ray_with_s3(s3_server: str) -> Iterator[None]:
    with local_ray_for_prep({**S3_ENV, "AWS_ENDPOINT_URL": s3_server, **NO_CLIENT_RETRIES}):
        yield


def cfg_for(url: str, out: str, endpoint: str, engine: str, retries: int) -> PrepConfig:
    return PrepConfig(
        source="events",
        inputs={"path": url},
        source_options={"columns": COLUMNS},
        output=out,
        max_history=5,
        engine=engine,
        storage=StorageConfig(endpoint_url=endpoint, retries=retries, retry_backoff_s=0.2),
    )


@pytest.fixture(scope="module")
def uploaded(s3_server: str, tmp_path_factory) -> tuple[str, int, dict[str, list[bytes]]]:
    """The log on S3 (URL, size) and the records of an undisturbed prep of it."""
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="outage-log")
    blob = log_blob()
    url = "s3://outage-log/logs/events.csv.gz"
    storage.write_bytes(url, blob)
    root = str(tmp_path_factory.mktemp("undisturbed"))
    manifest = run_prep(cfg_for(url, root, s3_server, "local", retries=0))
    assert manifest["stats"]["input_records"] == EVENTS
    return url, len(blob), records_by_split(root, manifest)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_short_outage_is_survived_record_for_record_and_long_one_publishes_nothing(
    engine, uploaded, proxy, tmp_path, request
):
    if engine == "ray":
        request.getfixturevalue("ray_with_s3")
    url, size, want = uploaded
    resets = proxy.resets
    proxy.outage_after(size // 2, seconds=3.0)  # mid-GET of the log: 3 s of resets
    got = run_prep(cfg_for(url, str(tmp_path / "outage"), proxy.endpoint, engine, retries=6))
    assert proxy.resets > resets  # the outage happened during this prep
    assert records_by_split(str(tmp_path / "outage"), got) == want

    proxy.outage_after(size // 2, seconds=60.0)
    out = tmp_path / "long"
    try:
        with pytest.raises(storage.StorageError, match=rf"read {url} at byte \d+: failed after 2 attempts"):
            run_prep(cfg_for(url, str(out), proxy.endpoint, engine, retries=1))
    finally:
        proxy.restore()
    assert not storage.exists(str(out / "manifest.json"))


def test_the_reader_resumes_at_the_byte_where_the_connection_broke(s3_bucket, proxy, caplog):
    data = bytes(range(256)) * 8192  # 2 MiB
    url = f"{s3_bucket}/blob.bin"
    storage.write_bytes(url, data)
    cfg = StorageConfig(endpoint_url=proxy.endpoint, retries=6, retry_backoff_s=0.2)
    proxy.outage_after(len(data) // 2, seconds=4.0)  # longer than s3fs's own retries
    with (
        caplog.at_level(logging.WARNING, logger="seller_dist.storage"),
        storage.open_input(url, cfg, buffer_size=64 << 10, block_size=256 << 10) as f,
    ):
        got = f.read()
    assert got == data
    offsets = [int(r.getMessage().split(" at byte ")[1].split(":")[0]) for r in caplog.records]
    assert offsets and all(0 < o < len(data) for o in offsets), offsets  # resumed mid-file, not from 0


def test_damaged_files_fail_on_the_ray_engine_too_and_allowed_ones_lose_the_same(ray_with_s3, tmp_path):
    """The unit tests' truncated .gz and corrupt row group, through engine=ray's read tasks."""
    from seller_dist.data.bad_records import DamagedInputError
    from tests.unit.test_prep_damaged_inputs import (
        prep_cfg,
        truncated_csv_gz,
        write_parquet_with_corrupt_group,
    )

    gz, pq_file = tmp_path / "events.csv.gz", tmp_path / "events.parquet"
    truncated_csv_gz(gz)
    write_parquet_with_corrupt_group(pq_file, corrupt=1)
    for log, where in ((gz, r"line \d+ \(byte \d+"), (pq_file, r"row group 1 \(rows 251-500\)")):
        out = tmp_path / f"out-{log.name}"
        with pytest.raises(DamagedInputError, match=rf"{log.name}: cannot be read past {where}"):
            run_prep(prep_cfg(log, out, engine="ray"))
        assert not (out / "manifest.json").exists()
        local = run_prep(prep_cfg(log, tmp_path / f"local-{log.name}", allow_damaged_inputs=[log.name]))
        on_ray = run_prep(
            prep_cfg(log, tmp_path / f"ray-{log.name}", allow_damaged_inputs=[log.name], engine="ray")
        )
        assert on_ray["damaged_inputs"] == local["damaged_inputs"] and on_ray["stats"] == local["stats"]
