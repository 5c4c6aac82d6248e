"""The one checkpoint format: trainable state + optimizer + step + data cursor, committed by a marker.
Each rank stages and uploads its files, then rank 0 writes COMMITTED last with every file's sha256, so
a writer cut off mid-way is never resumed from and corruption is an error naming the file; tensors are
safetensors, the rest JSON/YAML, never pickle (protocol and layout: docs/checkpoints.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
COMMIT_MARKER = "COMMITTED"
DENSE_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.json"
CONFIG_FILE = "config.yaml"
MODEL_META_FILE = "model_meta.json"  # ModelConfig + ModelVocab: rebuilds the shapes
MANIFEST_HASH_FILE = "manifest_sha256"
DATASET_FILE = "dataset.json"  # which dataset (URL, manifest sha256, item ids by row): warm starts map rows
RANKS_DIR = "_ranks"
_STEP_RE = re.compile(r"^step-(\d{8})$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be written or used; the message names it."""


class CheckpointCorruptError(CheckpointError):
    """A committed checkpoint whose files do not match the hashes in its COMMITTED marker."""


# ------------------------------------------------------------------------------------------ names
def checkpoints_root(storage_path: str, run_name: str) -> str:
    return storage.join(storage_path, run_name, "checkpoints")


def step_dirname(step: int) -> str:
    return f"step-{step:08d}"


def moe_file(ep_rank: int) -> str:
    return f"moe-rank-{ep_rank}.safetensors"


def data_state_file(rank: int) -> str:
    return f"data-rank-{rank}.json"


def is_step_url(url: str) -> bool:
    return _STEP_RE.match(url.rstrip("/").rsplit("/", 1)[-1]) is not None


def model_meta(model_cfg: Any, vocab: Any) -> dict[str, Any]:
    """What model_meta.json holds (ModelConfig + ModelVocab as dicts): export rebuilds shapes from it."""
    return {"model": dataclasses.asdict(model_cfg), "vocab": dataclasses.asdict(vocab)}


def dataset_record(
    url: str, manifest_sha256: str, manifest: dict[str, Any], item_ids: list[str]
) -> dict[str, Any]:
    """What dataset.json holds: the dataset a model was trained on, and which item each row of its
    item table is (`item_ids[i - 1]` is item_idx i), so a warm start on a later window can carry the
    rows over by item id even when that dataset is gone (seller_dist.train.warm_start)."""
    vocab = manifest.get("vocab") or {}
    return {
        "url": url,
        "manifest_sha256": manifest_sha256,
        "lineage": manifest.get("lineage"),
        "num_items": int(vocab.get("num_items", len(item_ids))),
        "attribute_fields": vocab.get("attribute_fields") or {},
        "item_ids": list(item_ids),
    }


def rank_done_file(rank: int) -> str:
    return f"{RANKS_DIR}/rank-{rank}.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------- nested state <-> safetensors
def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested state (an optimizer state_dict, ...) into tensors and a JSON structure: tensors,
    dicts (JSON-scalar keys), lists, tuples, JSON scalars and torch.dtype; anything else is a TypeError
    naming its path, never a fallback to pickle."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if torch.is_tensor(x):
            key = str(len(tensors))
            tensors[key] = x.detach().to("cpu").contiguous().clone()
            return {"t": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"d": {k: walk(v, f"{path}.{k}") for k, v in x.items()}}
            for k in x:
                if not isinstance(k, (int, float, str, bool)) and k is not None:
                    raise TypeError(f"state key {path}[{k!r}] is a {type(k).__name__}; keys must be scalars")
            return {"di": [[k, walk(v, f"{path}[{k!r}]")] for k, v in x.items()]}
        if isinstance(x, list):
            return {"l": [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, tuple):  # torch.Size is a tuple too
            return {"tu": [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, torch.dtype):
            return {"dtype": str(x).removeprefix("torch.")}
        if x is None or isinstance(x, (bool, int, float, str)):
            return {"v": x}
        raise TypeError(
            f"state value {path} is a {type(x).__name__}: only tensors, containers and JSON scalars "
            "can be checkpointed (no pickle)"
        )

    return tensors, walk(obj, "state")


def unflatten_state(tensors: dict[str, torch.Tensor], structure: Any) -> Any:
    def build(node: dict[str, Any]) -> Any:
        if "t" in node:
            return tensors[node["t"]]
        if "d" in node:
            return {k: build(v) for k, v in node["d"].items()}
        if "di" in node:
            return {k: build(v) for k, v in node["di"]}
        if "l" in node:
            return [build(v) for v in node["l"]]
        if "tu" in node:
            return tuple(build(v) for v in node["tu"])
        if "dtype" in node:
            return getattr(torch, node["dtype"])
        return node["v"]

    return build(structure)


# ------------------------------------------------------------------------------------------ write
class CheckpointWriter:
    """One rank's part of one checkpoint: everything goes into the private local `staging_dir` (the
    helpers below, or a tool such as DeepSpeed's `save_checkpoint`), then `upload()` copies it to `url`
    with retries and records each file's sha256 in `_ranks/rank-<r>.json`."""

    def __init__(
        self,
        root: str,
        step: int,
        rank: int = 0,
        world_size: int = 1,
        storage_cfg: StorageConfig | None = None,
        staging_parent: str | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.root, self.step, self.rank, self.world_size = root, int(step), rank, world_size
        self.storage_cfg = storage_cfg
        self.url = storage.join(root, step_dirname(step))
        self.staging_dir = Path(
            tempfile.mkdtemp(prefix=f"seller-ckpt-{step_dirname(step)}-rank{rank}-", dir=staging_parent)
        )

    def path(self, name: str) -> Path:
        p = self.staging_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """A flat name -> tensor dict as safetensors (copied to CPU, contiguous, unshared)."""
        if any(k.startswith("llm.") for k in tensors):
            raise CheckpointError(f"{name}: refusing to write frozen LLM weights ('llm.*') into a checkpoint")
        cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(cpu, str(self.path(name)), metadata={"format_version": str(FORMAT_VERSION)})

    def save_state(self, name: str, obj: Any) -> None:
        """Nested state (e.g. `optimizer.state_dict()`) as `<name>.safetensors` + `<name>.json`."""
        tensors, structure = flatten_state(obj)
        save_file(tensors, str(self.path(f"{name}.safetensors")))
        self.save_json(f"{name}.json", {"format_version": FORMAT_VERSION, "structure": structure})

    def save_json(self, name: str, obj: Any) -> None:
        self.path(name).write_text(json.dumps(obj, indent=2, sort_keys=True))

    def save_text(self, name: str, text: str) -> None:
        self.path(name).write_text(text)

    def staged_files(self) -> list[str]:
        return sorted(
            p.relative_to(self.staging_dir).as_posix() for p in self.staging_dir.rglob("*") if p.is_file()
        )

    def upload(self) -> dict[str, str]:
        """Copy every staged file to `url` and record their hashes; returns {relative path: sha256}."""
        files = self.staged_files()
        bad = [f for f in files if f == COMMIT_MARKER or f.startswith(f"{RANKS_DIR}/")]
        if bad:
            raise CheckpointError(f"{self.url}: {bad} are reserved names of the commit protocol")
        fs, base = storage.filesystem(self.url, self.storage_cfg)
        hashes = {rel: sha256_file(self.staging_dir / rel) for rel in files}
        srcs = [str(self.staging_dir / rel) for rel in files]
        dests = [f"{base.rstrip('/')}/{rel}" for rel in files]
        if storage.protocol_of(self.url) == "file":
            for d in {d.rsplit("/", 1)[0] for d in dests}:
                fs.makedirs(d, exist_ok=True)
        if files:  # one batched put: object stores upload the files concurrently
            storage.with_retries(lambda: fs.put(srcs, dests), f"upload {self.url}", self.storage_cfg)
        done = {"rank": self.rank, "world_size": self.world_size, "step": self.step, "files": hashes}
        storage.write_json(storage.join(self.url, rank_done_file(self.rank)), done, self.storage_cfg)
        self.cleanup()
        return hashes

    def cleanup(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def commit(url: str, world_size: int, storage_cfg: StorageConfig | None = None) -> dict[str, Any]:
    """Rank 0, after the caller's barrier: check every rank uploaded, then write COMMITTED last."""
    step_match = _STEP_RE.match(url.rstrip("/").rsplit("/", 1)[-1])
    if step_match is None:
        raise CheckpointError(f"{url} is not a step-<8 digits> checkpoint folder")
    files: dict[str, str] = {}
    owner: dict[str, int] = {}
    for rank in range(world_size):
        done_url = storage.join(url, rank_done_file(rank))
        try:
            raw = storage.read_bytes(done_url, storage_cfg)
        except FileNotFoundError as e:
            raise CheckpointError(
                f"cannot commit {url}: rank {rank} of {world_size} has not uploaded its part "
                "(call commit only after every rank's upload() and a barrier)"
            ) from e
        part = json.loads(raw)
        if part.get("world_size") != world_size:
            raise CheckpointError(
                f"cannot commit {url}: {rank_done_file(rank)} was written by a job with world_size "
                f"{part.get('world_size')}, not {world_size} (a leftover of an earlier attempt)"
            )
        files[rank_done_file(rank)] = sha256_bytes(raw)
        for rel, digest in part["files"].items():
            if rel in files and files[rel] != digest:
                raise CheckpointError(
                    f"cannot commit {url}: ranks {owner[rel]} and {rank} both wrote {rel} with different "
                    "contents; give each rank's files distinct names"
                )
            files[rel], owner[rel] = digest, rank
    marker = {
        "format_version": FORMAT_VERSION,
        "step": int(step_match.group(1)),
        "world_size": world_size,
        "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": dict(sorted(files.items())),
    }
    storage.write_json(storage.join(url, COMMIT_MARKER), marker, storage_cfg)
    log.info("committed checkpoint %s (%d files)", url, len(files))
    return marker


# ------------------------------------------------------------------------------------------- read
@dataclass
class Checkpoint:
    """A committed checkpoint. Every read is checked against the sha256 recorded in COMMITTED."""

    url: str
    step: int
    world_size: int
    files: dict[str, str]
    storage_cfg: StorageConfig | None = None
    marker_sha256: str = ""  # sha256 of the COMMITTED bytes: the identity of the whole checkpoint

    @staticmethod
    def open(url: str, storage_cfg: StorageConfig | None = None, verify: bool = True) -> Checkpoint:
        """Read the marker; with `verify`, also hash every file now (else each read is checked)."""
        marker_url = storage.join(url, COMMIT_MARKER)
        try:
            raw = storage.read_bytes(marker_url, storage_cfg)
        except FileNotFoundError as e:
            raise CheckpointError(
                f"checkpoint {url} has no {COMMIT_MARKER} marker: it was never committed (cut off mid-write)"
            ) from e
        try:
            marker = json.loads(raw)
            ckpt = Checkpoint(
                url,
                int(marker["step"]),
                int(marker["world_size"]),
                dict(marker["files"]),
                storage_cfg,
                sha256_bytes(raw),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointCorruptError(
                f"checkpoint {url} is corrupt: unreadable {COMMIT_MARKER} ({e})"
            ) from e
        if int(marker.get("format_version", -1)) > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {url} has format_version {marker['format_version']}; this seller-dist reads "
                f"up to {FORMAT_VERSION}: upgrade seller-dist"
            )
        if verify:
            ckpt.verify()
        return ckpt

    def verify(self) -> None:
        """Hash every file (fetched concurrently from object stores); raises naming the first bad one."""
        fs, base = storage.filesystem(self.url, self.storage_cfg)
        paths = {f"{base.rstrip('/')}/{name}": name for name in self.files}
        if not paths:
            return
        got = storage.with_retries(
            lambda: fs.cat(list(paths), on_error="return"), f"read {self.url}", self.storage_cfg
        )
        for path, name in sorted(paths.items(), key=lambda kv: kv[1]):
            data = got.get(path) if isinstance(got, dict) else None
            self._check(name, data)

    def _check(self, name: str, data: bytes | BaseException | None) -> bytes:
        if data is None or isinstance(data, FileNotFoundError):
            raise CheckpointCorruptError(f"checkpoint {self.url} is corrupt: file {name} is missing")
        if isinstance(data, BaseException):
            raise data
        if sha256_bytes(data) != self.files[name]:
            raise CheckpointCorruptError(f"checkpoint {self.url} is corrupt: file {name} sha256 mismatch")
        return data

    def has(self, name: str) -> bool:
        return name in self.files

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix))

    def read_bytes(self, name: str) -> bytes:
        if name not in self.files:
            raise CheckpointError(f"checkpoint {self.url} has no file {name} (files: {self.names()[:20]})")
        try:
            data: bytes | BaseException = storage.read_bytes(storage.join(self.url, name), self.storage_cfg)
        except FileNotFoundError as e:
            data = e
        return self._check(name, data)

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_safetensors_bytes(self.read_bytes(name))

    def load_state(self, name: str) -> Any:
        """The nested state saved by `CheckpointWriter.save_state(name, ...)`."""
        tensors = self.load_tensors(f"{name}.safetensors")
        return unflatten_state(tensors, self.load_json(f"{name}.json")["structure"])

    def load_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def load_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def download(self, dest: str | Path, prefix: str = "") -> Path:
        """Copy (verified) every file under `prefix` to a local folder, e.g. an opaque DeepSpeed dir."""
        out = Path(dest)
        for name in self.names(prefix):
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(name))
        return out


@dataclass
class CheckpointEntry:
    step: int
    url: str
    committed: bool


def list_checkpoints(root: str, storage_cfg: StorageConfig | None = None) -> list[CheckpointEntry]:
    """Every step folder under `root`, oldest first, with whether it holds a COMMITTED marker."""
    out = []
    for name in storage.listdir(root, storage_cfg):
        m = _STEP_RE.match(name)
        if m is None:
            continue
        url = storage.join(root, name)
        out.append(
            CheckpointEntry(
                int(m.group(1)), url, storage.exists(storage.join(url, COMMIT_MARKER), storage_cfg)
            )
        )
    return sorted(out, key=lambda e: e.step)


def latest_committed(
    root: str, storage_cfg: StorageConfig | None = None, verify: bool = True
) -> Checkpoint | None:
    """The newest committed checkpoint (folders without COMMITTED are skipped: cut off mid-write).
    A committed but corrupt newest checkpoint is an error naming it, never a silent fallback."""
    committed = [e for e in list_checkpoints(root, storage_cfg) if e.committed]
    if not committed:
        return None
    return Checkpoint.open(committed[-1].url, storage_cfg, verify=verify)


def best_checkpoint(root: str, key: str = "valid_loss", storage_cfg: StorageConfig | None = None) -> Any:
    """The committed checkpoint whose train_state.json has the lowest finite `key` (the earliest
    on a tie), or None when none records one."""
    best, best_value = None, math.inf
    for e in list_checkpoints(root, storage_cfg):
        if not e.committed:
            continue
        value = json.loads(storage.read_bytes(storage.join(e.url, TRAIN_STATE_FILE), storage_cfg)).get(key)
        if value is not None and math.isfinite(float(value)) and float(value) < best_value:
            best, best_value = e, float(value)
    return best


def prune(
    root: str, keep: int, storage_cfg: StorageConfig | None = None, keep_best: str | None = None
) -> list[str]:
    """Delete all but the newest `keep` committed checkpoints, and uncommitted folders older than
    the newest committed one (dead partial writes). Newer uncommitted ones may be in progress.
    `keep_best="valid_loss"`: also keep the committed checkpoint with the lowest such value."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    entries = list_checkpoints(root, storage_cfg)
    committed = [e for e in entries if e.committed]
    if not committed:
        return []
    newest = committed[-1].step
    best = best_checkpoint(root, keep_best, storage_cfg) if keep_best else None
    doomed = [e for e in committed[:-keep] if best is None or e.step != best.step]
    doomed += [e for e in entries if not e.committed and e.step < newest]
    removed = []
    for e in sorted(doomed, key=lambda e: e.step):
        # the marker goes first, so a delete cut off half-way never leaves a "committed" husk
        storage.remove(storage.join(e.url, COMMIT_MARKER), storage_cfg, recursive=False)
        storage.remove(e.url, storage_cfg)
        removed.append(e.url)
    return removed
