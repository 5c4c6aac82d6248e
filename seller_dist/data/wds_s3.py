"""WebDataset `s3://` opener backed by fsspec/s3fs (WebDataset itself has none).

Why not WebDataset's pipe-to-`aws s3 cp`: it needs the AWS CLI on every node, hides errors in a
subprocess and ignores our endpoint config. Reads fetch the whole object through
`seller_dist.storage` (one GET, transient errors retried with backoff) with one S3 client per
process (`read_bytes`, which the shard stream uses too); writes go through s3fs.
The endpoint comes from the StorageConfig given at registration, else `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import importlib
import io
import json
import os
from typing import IO, Any

import fsspec

from seller_dist import storage
from seller_dist.config import StorageConfig

S3_SCHEMES = ("s3", "s3a")
_config: StorageConfig | None = None
# one filesystem (S3 client) per process and endpoint: creating a client costs 0.1-0.4 s, a GET of a
# small object ~15 ms. Keyed by pid so a forked loader worker never reuses its parent's client.
_filesystems: dict[tuple[int, str, str], fsspec.AbstractFileSystem] = {}


def read_bytes(url: str, cfg: StorageConfig | None = None) -> bytes:
    """storage.read_bytes (same retries and errors) through this process's cached filesystem."""
    opts = storage.storage_options(url, cfg)
    key = (os.getpid(), storage.protocol_of(url), json.dumps(opts, sort_keys=True, default=str))
    fs = _filesystems.get(key)
    fresh, path = storage.filesystem(url, cfg)
    if fs is None:
        fs = _filesystems[key] = fresh
    return storage.with_retries(lambda: fs.cat_file(path), f"read {url}", cfg)


def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    """gopen handler: a binary file object for an s3:// URL."""
    if mode == "rb":
        return io.BytesIO(read_bytes(url, _config))
    if mode == "wb":
        return storage.open_url(url, "wb", _config)
    raise ValueError(f"{url}: mode {mode!r} is not supported by the s3 opener (use 'rb' or 'wb')")


def register_s3_opener(cfg: StorageConfig | None = None) -> None:
    """Make `webdataset.WebDataset("s3://bucket/shard-{000000..000009}.tar")` work in this process.
    Idempotent; loader workers forked afterwards inherit the registration."""
    global _config
    # `webdataset.gopen` the attribute is the function; the dispatch table lives in the module
    schemes = importlib.import_module("webdataset.gopen").gopen_schemes
    _config = cfg
    for scheme in S3_SCHEMES:
        schemes[scheme] = gopen_s3
