"""storage: local atomic writes, retries of transient errors only, listing."""

from __future__ import annotations

import pytest

from seller_dist import storage
from seller_dist.config import StorageConfig


def test_local_write_read_list_remove(tmp_path):
    root = str(tmp_path / "ds")
    storage.write_bytes(storage.join(root, "a/x.bin"), b"\x00\x01")
    storage.write_json(storage.join(root, "m.json"), {"k": [1, 2]})
    assert storage.read_bytes(storage.join(root, "a/x.bin")) == b"\x00\x01"
    assert storage.read_json(storage.join(root, "m.json")) == {"k": [1, 2]}
    assert storage.listdir(root) == ["a", "m.json"]
    assert not [p for p in (tmp_path / "ds").rglob("*") if ".tmp-" in p.name]  # no temp files left
    storage.remove(storage.join(root, "a"))
    assert storage.listdir(root) == ["m.json"]
    assert storage.listdir(storage.join(root, "missing")) == []


def test_transient_errors_are_retried_then_succeed():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset by peer")
        return "ok"

    assert (
        storage.with_retries(flaky, "read s3://b/k", StorageConfig(retries=5, retry_backoff_s=0.001)) == "ok"
    )
    assert len(calls) == 3


def test_retries_exhausted_names_the_url():
    def always():
        raise ConnectionError("boom")

    with pytest.raises(storage.StorageError, match=r"read s3://b/k: failed after 3 attempts: boom"):
        storage.with_retries(always, "read s3://b/k", StorageConfig(retries=2, retry_backoff_s=0.001))


def test_missing_file_is_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("s3://b/k")

    with pytest.raises(FileNotFoundError):
        storage.with_retries(missing, "read", StorageConfig(retries=5, retry_backoff_s=0.001))
    assert len(calls) == 1


def test_s3_options_take_endpoint_from_config_then_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    opts = storage.storage_options("s3://b/k")
    assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:1111"
    opts = storage.storage_options("s3://b/k", StorageConfig(endpoint_url="http://127.0.0.1:2222"))
    assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:2222"
    assert "key" not in opts and "secret" not in opts  # credentials never come from config
    assert storage.storage_options("/tmp/x") == {}
