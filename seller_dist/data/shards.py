"""WebDataset shard files and the manifest that publishes them (the layout: docs/data.md). A shard is
built in memory and uploaded in one PUT, so an object store never shows half a shard; its sha256
goes into the manifest, which is written last, and is checked on read.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.data.schema import SCHEMA_VERSION
from seller_dist.errors import UserError

MANIFEST_NAME = "manifest.json"


class ShardError(UserError, RuntimeError):
    """A missing, corrupt or truncated shard; the message names it."""


@dataclass
class ShardInfo:
    path: str  # relative to the dataset root, e.g. "train/shard-000003.tar"
    count: int
    bytes: int
    sha256: str


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic bytes: same records -> same shard -> same sha256
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


# The fixed fields of the USTAR header `_add_member` writes (mode 0644, uid/gid 0, mtime 0, a regular
# file, empty user/group names): `ustar_member` fills in name, size and checksum around them. It is
# byte-identical to tarfile's (tests/unit/test_shards_tar.py) and several times faster, which matters
# when prep writes millions of records.
_MODE_IDS = b"0000644\x000000000\x000000000\x00"  # mode, uid, gid (8 bytes each)
_MTIME = b"00000000000\x00"
_AFTER_CHKSUM = b"0" + b"\x00" * 100 + b"ustar\x0000"  # type, linkname, magic; names and devices empty
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def ustar_member(name: str, data: bytes) -> bytes:
    """Header + data + padding of one regular-file member; tarfile's path for names it cannot fit."""
    raw = name.encode("utf-8")
    if len(raw) > 100 or len(data) >= 8**11:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            _add_member(tar, name, data)
        return buf.getvalue()[: _BLOCK + -(-len(data) // _BLOCK) * _BLOCK]
    size = b"%011o\x00" % len(data)
    head = raw.ljust(100, b"\x00") + _MODE_IDS + size + _MTIME
    tail = _AFTER_CHKSUM.ljust(_BLOCK - 148 - 8, b"\x00")
    chksum = sum(head) + 8 * 32 + sum(tail)
    header = head + b"%06o\x00 " % chksum + tail
    return header + data + b"\x00" * (-len(data) % _BLOCK)


def end_of_archive(size: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record (what tarfile writes on close)."""
    size += 2 * _BLOCK
    return b"\x00" * (2 * _BLOCK + (-size % _RECORD))


class ShardWriter:
    """Writes samples {"__key__": k, ext: bytes, ...} into size- or count-bounded tar shards at a URL."""

    def __init__(
        self,
        root: str,
        subdir: str,
        max_records: int,
        max_bytes: int,
        storage_cfg: StorageConfig | None = None,
        start_index: int = 0,
        prefix: str = "shard",
    ):
        self.root, self.subdir = root, subdir
        self.max_records, self.max_bytes = max_records, max_bytes
        self.storage_cfg = storage_cfg
        self.prefix = prefix
        self.index = start_index
        self.shards: list[ShardInfo] = []
        self._parts: list[bytes] = []
        self._size = 0
        self._count = 0

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        if "/" in key or "." in key:
            raise ValueError(f"sample key {key!r} must not contain '/' or '.' (WebDataset splits on them)")
        for ext, data in sample.items():
            if ext == "__key__":
                continue
            member = ustar_member(f"{key}.{ext}", data)
            self._parts.append(member)
            self._size += len(member)
        self._count += 1
        if self._count >= self.max_records or self._size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if self._count == 0:
            return
        self._parts.append(end_of_archive(self._size))
        data = b"".join(self._parts)
        rel = f"{self.subdir}/{self.prefix}-{self.index:06d}.tar"
        storage.write_bytes(storage.join(self.root, rel), data, self.storage_cfg)
        self.shards.append(ShardInfo(rel, self._count, len(data), hashlib.sha256(data).hexdigest()))
        self.index += 1
        self._parts, self._size, self._count = [], 0, 0

    def close(self) -> list[ShardInfo]:
        self.flush()
        return self.shards


def read_shard_bytes(
    root: str,
    info: ShardInfo | dict,
    storage_cfg: StorageConfig | None = None,
    verify: bool = True,
    read: Callable[[str, StorageConfig | None], bytes] | None = None,
) -> bytes:
    """Fetch one shard (retrying transient errors) and check its sha256 against the manifest.
    `read(url, cfg)` replaces storage.read_bytes (the stream passes one that reuses its S3 client)."""
    rel = info["path"] if isinstance(info, dict) else info.path
    want = info["sha256"] if isinstance(info, dict) else info.sha256
    url = storage.join(root, rel)
    try:
        data = (read or storage.read_bytes)(url, storage_cfg)
    except FileNotFoundError:
        raise ShardError(f"shard {url} is missing (listed in the manifest)") from None
    if verify:
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise ShardError(f"shard {url} is corrupt: sha256 {got[:16]}... != manifest {want[:16]}...")
    return data


def iter_tar_samples(data: bytes, name: str) -> list[dict[str, Any]]:
    """Group tar members by key into samples; a truncated or garbled tar is a ShardError naming it."""
    samples: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                f = tar.extractfile(m)
                payload = f.read() if f is not None else b""
                if len(payload) != m.size:
                    raise ShardError(f"shard {name} is truncated inside member {m.name}")
                if cur is None or cur["__key__"] != key:
                    cur = {"__key__": key}
                    samples.append(cur)
                cur[ext] = payload
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"shard {name} is truncated or not a tar file: {e}") from None
    return samples


def new_manifest(source: dict[str, Any], code_version: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "created_unix": int(time.time()),
        "code_version": code_version,
        "splits": {},  # split -> {"count": n, "shards": [ShardInfo...]}
        "items": {},  # {"count": n, "shards": [...], "embedding_dim": d or 0}
        "vocab": {},  # num_items, num_users, attribute_fields: {field: [values...]}, actions
        "stats": {},
    }


@dataclass
class Manifest:
    root: str
    data: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def load(root: str, storage_cfg: StorageConfig | None = None) -> Manifest:
        root = root[: -len(MANIFEST_NAME)].rstrip("/") if root.endswith(MANIFEST_NAME) else root.rstrip("/")
        url = storage.join(root, MANIFEST_NAME)
        try:
            data = storage.read_json(url, storage_cfg)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no manifest at {url}: the dataset was never prepared there or its prep run did not finish "
                "(run `seller-dist prep` with output set to this URL)"
            ) from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{url}: schema_version {data.get('schema_version')} is not supported "
                f"(this code reads {SCHEMA_VERSION}); re-run `seller-dist prep`"
            )
        return Manifest(root, data)

    def shards(self, split: str) -> list[dict[str, Any]]:
        if split not in self.data["splits"]:
            raise KeyError(
                f"{self.root}: manifest has no '{split}' split (has {sorted(self.data['splits'])})"
            )
        return self.data["splits"][split]["shards"]

    def count(self, split: str) -> int:
        return int(sum(s["count"] for s in self.shards(split)))

    def sha256(self) -> str:
        """Identity of the dataset, stored in checkpoints to catch resuming on other data."""
        import json

        return hashlib.sha256(json.dumps(self.data["splits"], sort_keys=True).encode()).hexdigest()


def write_manifest(root: str, manifest: dict[str, Any], storage_cfg: StorageConfig | None = None) -> None:
    storage.write_json(storage.join(root, MANIFEST_NAME), manifest, storage_cfg)
