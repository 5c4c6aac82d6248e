"""One way to reach every URL: local paths, s3://, gs://, through fsspec. The S3 endpoint comes from
the config or `AWS_ENDPOINT_URL`, credentials only from the environment or the cloud role (never from
configs); transient errors are retried with exponential backoff. Publishing is "data first, marker
last": readers trust a dataset or checkpoint only once its marker (manifest.json, COMMITTED) exists.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from seller_dist.config import StorageConfig
from seller_dist.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors worth retrying: network hiccups and throttling. FileNotFoundError is final.
_TRANSIENT_NAMES = (
    "ConnectionError",
    "ConnectionClosedError",
    "ClientOSError",
    "ClientConnectorError",
    "ResponseStreamingError",
    "IncompleteRead",
    "ProtocolError",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "ReadTimeoutError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "SlowDown",
    "ServiceUnavailable",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
)


class StorageError(UserError, RuntimeError):
    """An object-store failure that survived retries; the message names the URL (and, for a read,
    the byte offset). A UserError: the store or the network is the user's to fix, so the CLI words it
    in one line."""


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def join(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def endpoint_url(cfg: StorageConfig | None = None) -> str | None:
    if cfg is not None and cfg.endpoint_url:
        return cfg.endpoint_url
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def storage_options(url: str, cfg: StorageConfig | None = None) -> dict[str, Any]:
    """fsspec options for `url`: endpoint and region for S3; credentials stay with botocore's chain."""
    proto = protocol_of(url)
    if proto in ("s3", "s3a"):
        client_kwargs: dict[str, Any] = {}
        ep = endpoint_url(cfg)
        if ep:
            client_kwargs["endpoint_url"] = ep
        region = (cfg.region if cfg else None) or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client_kwargs["region_name"] = region
        # skip_instance_cache: s3fs caches clients per-thread; a fork (loader workers) must not reuse one.
        return {"client_kwargs": client_kwargs, "skip_instance_cache": True}
    return {}


def filesystem(url: str, cfg: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL."""
    return fsspec.core.url_to_fs(url, **storage_options(url, cfg))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {type(e).__name__ for e in _exception_chain(exc)}
    text = str(exc)
    return bool(names & set(_TRANSIENT_NAMES)) or any(n in text for n in _TRANSIENT_NAMES)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def with_retries(fn: Callable[[], T], what: str, cfg: StorageConfig | None = None) -> T:
    """Run `fn`, retrying transient object-store errors with jittered exponential backoff."""
    retries = cfg.retries if cfg else 5
    backoff = cfg.retry_backoff_s if cfg else 0.2
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:
            if not is_transient(e) or attempt == retries:
                if is_transient(e):
                    raise StorageError(f"{what}: failed after {retries + 1} attempts: {e}") from e
                raise
            delay = backoff * (2**attempt) * (0.5 + random.random())
            log.warning(
                "%s: transient error (%s), retry %d/%d in %.2fs", what, e, attempt + 1, retries, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_bytes(url: str, cfg: StorageConfig | None = None) -> bytes:
    fs, path = filesystem(url, cfg)
    return with_retries(lambda: fs.cat_file(path), f"read {url}", cfg)


# one filesystem (S3 client) per process and endpoint: creating a client costs far more than a GET of
# a small object. Keyed by pid so a forked loader worker never reuses its parent's client.
_filesystems: dict[tuple[int, str, str], fsspec.AbstractFileSystem] = {}


def read_bytes_reusing_client(url: str, cfg: StorageConfig | None = None) -> bytes:
    """read_bytes (same retries and errors) through this process's cached filesystem: how the shard
    stream fetches shards (seller_dist/data/stream.py), one GET each without a new S3 client."""
    opts = storage_options(url, cfg)
    key = (os.getpid(), protocol_of(url), json.dumps(opts, sort_keys=True, default=str))
    fresh, path = filesystem(url, cfg)
    fs = _filesystems.setdefault(key, fresh)
    return with_retries(lambda: fs.cat_file(path), f"read {url}", cfg)


def write_bytes(url: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    fs, path = filesystem(url, cfg)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if protocol_of(url) == "file" and parent:
        fs.makedirs(parent, exist_ok=True)

    def _put() -> None:
        if protocol_of(url) == "file":
            # local: write to a temp name then rename, so a reader never sees half a file
            tmp = f"{path}.tmp-{os.getpid()}-{random.randrange(1 << 30)}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            fs.pipe_file(path, data)  # object stores publish a PUT atomically

    with_retries(_put, f"write {url}", cfg)


def read_json(url: str, cfg: StorageConfig | None = None) -> Any:
    return json.loads(read_bytes(url, cfg))


def write_json(url: str, obj: Any, cfg: StorageConfig | None = None) -> None:
    write_bytes(url, json.dumps(obj, indent=2, sort_keys=True).encode(), cfg)


def exists(url: str, cfg: StorageConfig | None = None) -> bool:
    fs, path = filesystem(url, cfg)
    return with_retries(lambda: fs.exists(path), f"stat {url}", cfg)


def listdir(url: str, cfg: StorageConfig | None = None) -> list[str]:
    """Names (not full paths) directly under a prefix; empty when it does not exist."""
    fs, path = filesystem(url, cfg)

    def _ls() -> list[str]:
        try:
            fs.invalidate_cache(path)
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    return with_retries(_ls, f"list {url}", cfg)


def remove(url: str, cfg: StorageConfig | None = None, recursive: bool = True) -> None:
    fs, path = filesystem(url, cfg)
    with contextlib.suppress(FileNotFoundError):
        with_retries(lambda: fs.rm(path, recursive=recursive), f"remove {url}", cfg)


class ResumableReader(io.RawIOBase):
    """A read-only, seekable file over a URL that survives a store outage: a read that fails with a
    transient error is retried (`with_retries`: bounded, jittered backoff from the StorageConfig) on
    a freshly opened file at the same byte offset, so the bytes handed out are exactly the file's,
    however often the connection broke. Past the retries it raises StorageError naming the URL and
    the offset. Wrap it in `io.BufferedReader` (as `open_input` does) for line and gzip reading."""

    def __init__(self, url: str, cfg: StorageConfig | None = None, block_size: int = 16 << 20):
        super().__init__()
        self.url, self.cfg, self.block_size = url, cfg, block_size
        self._pos = 0
        self._file: Any = None
        self._size: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        if self._size is None:
            fs, path = filesystem(self.url, self.cfg)
            self._size = int(with_retries(lambda: fs.size(path), f"stat {self.url}", self.cfg))
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: None}[whence]
        self._pos = max(0, (self.size() if base is None else base) + offset)
        self._drop()  # reopened at the new offset by the next read
        return self._pos

    def _drop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def _read_once(self, n: int) -> bytes:
        if self._file is None:
            fs, path = filesystem(self.url, self.cfg)  # a new client: the old connection may be dead
            f = fs.open(path, "rb", block_size=self.block_size)  # object stores: one ranged GET per block
            f.seek(self._pos)
            self._file = f
        try:
            return self._file.read(n)
        except BaseException:
            self._drop()
            raise

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = with_retries(
            lambda: self._read_once(len(view)), f"read {self.url} at byte {self._pos}", self.cfg
        )
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()


def open_input(
    url: str, cfg: StorageConfig | None = None, buffer_size: int = 1 << 20, block_size: int = 16 << 20
) -> io.BufferedReader:
    """How prep reads its inputs: a buffered ResumableReader (a transient store error never ends a
    read early; a persistent one raises StorageError with the offset)."""
    return io.BufferedReader(ResumableReader(url, cfg, block_size), buffer_size=buffer_size)
