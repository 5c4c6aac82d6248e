"""Where the frozen LLM's files come from (`model.llm_path`), and whether they may be loaded.
Both checks run before any transformers call: `resolve_llm_path` makes the path a local folder (an
object-store copy downloaded once per node and verified; a hub id refused, since jobs run without hub
access), and `check_loadable` refuses code the user did not choose to run (remote code, pickled
weights). docs/llm.md, "What is checked before anything loads", states the rules.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = ".complete.json"  # written last, inside the temp dir: the folder is complete when it exists
_LEGACY_MARKER = ".complete"  # older caches: no sizes recorded, so they are downloaded again
_RESERVED = {MANIFEST, _LEGACY_MARKER}  # our own names: never taken from the store
_HASH_CHUNK = 8 << 20

# org/name with hub-legal characters; a path that also is not an existing directory is taken for a hub id
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


class LLMSourceError(UserError):
    """`model.llm_path` cannot be used as given; the message says what to change (one line)."""


class LLMNotFoundError(LLMSourceError, FileNotFoundError):
    """No checkpoint at `model.llm_path` (also a FileNotFoundError, as the older resolver raised)."""


@dataclass(frozen=True)
class LLMSource:
    """The local folder for `model.llm_path`, and whether this call downloaded it (False: reused)."""

    local_dir: str
    downloaded: bool


@dataclass(frozen=True)
class LoadPlan:
    """How transformers may load `local_dir`: from safetensors or (allowed) pickled weights, and
    whether with the checkpoint's own code (True only when the user allowed it AND it is needed)."""

    local_dir: str
    use_safetensors: bool
    trust_remote_code: bool


# ------------------------------------------------------------------------------------------ resolve
def resolve_llm_path(path: str, cache_dir: str, storage_cfg: StorageConfig | None = None) -> str:
    """A local folder holding the checkpoint at `path` (see `fetch_llm`)."""
    return fetch_llm(path, cache_dir, storage_cfg).local_dir


def fetch_llm(path: str, cache_dir: str, storage_cfg: StorageConfig | None = None) -> LLMSource:
    """`path` itself when it is a local folder with a config.json; for an s3:// / gs:// prefix a verified
    copy under `cache_dir` (node-local: docs/llm.md), downloaded once per node and reused while complete."""
    if storage.protocol_of(path) == "file":
        return LLMSource(_local_dir(path), downloaded=False)
    name = path.rstrip("/").replace("://", "_").replace("/", "_")
    dest = Path(cache_dir, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _node_lock(Path(f"{dest}.lock"), path) as locked:
        problem = _cache_problem(dest)
        if problem is None:
            log.info("reusing verified copy of %s at %s", _safe_url(path), dest)
            return LLMSource(str(dest), downloaded=False)
        if dest.exists():
            log.warning("cached copy of %s at %s %s: downloading it again", _safe_url(path), dest, problem)
        _download(path, dest, storage_cfg, locked)
        return LLMSource(str(dest), downloaded=True)


def _local_dir(path: str) -> str:
    local = path[len("file://") :] if path.startswith("file://") else path
    p = Path(local).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise LLMNotFoundError(
                f"model.llm_path={path}: no config.json there; give a Hugging Face checkpoint directory "
                "(e.g. the output of `seller-dist bootstrap-llm` or `huggingface-cli download`)"
            )
        return str(p)
    if not path.startswith("file://") and _HUB_ID.match(path):
        raise LLMSourceError(
            f"model.llm_path={path}: no local folder of that name, and this job does not download from "
            f"the Hugging Face hub; download it first (e.g. `huggingface-cli download {path} "
            f"--local-dir /models/{path.rsplit('/', 1)[-1].lower()}`) and set model.llm_path to that "
            "folder or to an s3:// copy of it"
        )
    if p.exists():
        raise LLMNotFoundError(f"model.llm_path={path}: not a directory; give the checkpoint's folder")
    raise LLMNotFoundError(
        f"model.llm_path={path}: no such local folder (relative paths start at {os.getcwd()}); "
        "give a Hugging Face checkpoint directory or an s3:// / gs:// prefix"
    )


@contextlib.contextmanager
def _node_lock(lock_path: Path, what: str) -> Iterator[bool]:
    """An exclusive flock on `lock_path` (kept, never deleted: deleting a lock file races). Yields
    False where the filesystem has no flock (e.g. Lustre mounted without it): then every process
    may download, and only the atomic rename keeps the copy whole."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                log.warning(
                    "%s: no file locking on this filesystem (%s); ranks may download twice", lock_path, e
                )
                yield False
                return
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            log.info("waiting for another process on this node to fetch %s (%s)", _safe_url(what), lock_path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _cache_problem(dest: Path) -> str | None:
    """None when `dest` holds a complete copy (every file of its manifest present with its size),
    else what is wrong. Sizes only: cheap at every start; the sha256s are for audits."""
    man_path = dest / MANIFEST
    if not dest.exists():
        return "is missing"
    if not man_path.is_file():
        return f"has no {MANIFEST} (an interrupted or older download)"
    try:
        files = json.loads(man_path.read_text())["files"]
        for f in files:
            local = dest / f["path"]
            size = local.stat().st_size if local.is_file() else None
            if size is None:
                return f"lacks {f['path']}"
            if size != f["size"]:
                return f"has {f['path']} at {size} bytes, {f['size']} expected (truncated or changed)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"has an unreadable {MANIFEST} ({e})"
    return None


def _download(url: str, dest: Path, storage_cfg: StorageConfig | None, locked: bool) -> None:
    """Copy every object under `url` into a temp dir beside `dest`, check sizes, write the manifest
    last, then rename the temp dir to `dest`. `locked`: the node lock is held (no one else writes)."""
    fs, remote = storage.filesystem(url, storage_cfg)
    listing = _remote_listing(fs, remote, url, storage_cfg)
    for stale in dest.parent.glob(f"{dest.name}.tmp-*") if locked else ():  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    t0 = time.monotonic()
    try:
        entries = []
        for rel, info in listing:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = info["name"]
            storage.with_retries(
                lambda src=src, target=target: fs.get_file(src, str(target)),
                f"download {_safe_url(url)}/{rel}",
                storage_cfg,
            )
            size = target.stat().st_size
            if size != info["size"]:
                raise LLMSourceError(
                    f"model.llm_path={_safe_url(url)}: downloaded {rel} has {size} bytes but the store "
                    f"lists {info['size']} (cut short, or replaced while downloading); run again"
                )
            entry: dict[str, Any] = {
                "path": rel,
                "size": size,
                "sha256": sha256_of(target),
                "remote_size": info["size"],
            }
            if info.get("etag"):
                entry["etag"] = info["etag"]
            entries.append(entry)
        manifest = {
            "source": _safe_url(url),
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": entries,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        # unlocked only: another process may have published a complete copy meanwhile; keep it
        if locked or _cache_problem(dest) is not None:
            if dest.exists():  # an incomplete or stale copy (the caller logged why)
                trash = Path(f"{dest}.tmp-old-{uuid.uuid4().hex[:8]}")
                dest.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            try:
                tmp.replace(dest)
            except OSError:  # unlocked only: another process published a copy in between
                if locked or _cache_problem(dest) is not None:
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(e["size"] for e in entries)
    log.info(
        "downloaded %s (%d files, %.1f MB) to %s in %.1fs",
        _safe_url(url),
        len(entries),
        total / 1e6,
        dest,
        time.monotonic() - t0,
    )


def _remote_listing(
    fs: Any, remote: str, url: str, storage_cfg: StorageConfig | None
) -> list[tuple[str, dict[str, Any]]]:
    """(relative path, {name, size, etag}) for every object under the prefix, sorted."""
    prefix = remote.rstrip("/") + "/"

    def _find() -> dict[str, Any]:
        fs.invalidate_cache(remote)
        try:
            return fs.find(remote, detail=True)
        except FileNotFoundError:
            return {}

    found = storage.with_retries(_find, f"list {_safe_url(url)}", storage_cfg)
    out = []
    for name, info in sorted(found.items()):
        if info.get("type", "file") != "file" or name.endswith("/") or not name.startswith(prefix):
            continue
        rel = name[len(prefix) :]
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or any(p in ("..", ".") for p in parts):
            raise LLMSourceError(
                f"model.llm_path={_safe_url(url)}: object {name!r} would land outside the cache"
            )
        if rel in _RESERVED:
            log.warning("%s: ignoring the stored %s (this cache writes its own)", _safe_url(url), rel)
            continue
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        out.append(
            (rel, {"name": name, "size": int(info["size"]), "etag": str(etag).strip('"') if etag else None})
        )
    if not out:
        raise LLMNotFoundError(f"model.llm_path={_safe_url(url)}: nothing stored under that prefix")
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safe_url(url: str) -> str:
    """`url` without user info or query: what may be logged or written to the manifest."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# --------------------------------------------------------------------------------- may it be loaded
def check_loadable(local_dir: str, trust_remote_code: bool, allow_pickle_weights: bool) -> LoadPlan:
    """Refuse, with what to change, a checkpoint whose loading would run code the user did not allow:
    its own Python (auto_map / an unknown model_type) or pickled weights; name missing shards."""
    d = Path(local_dir)
    if not (d / "config.json").is_file():
        raise LLMNotFoundError(f"{d}: no config.json there; not a Hugging Face checkpoint directory")
    needs_code = _remote_code_needed(d, trust_remote_code, model=True)
    return LoadPlan(
        local_dir=str(d),
        use_safetensors=_weights_plan(d, allow_pickle_weights),
        trust_remote_code=trust_remote_code and needs_code,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise LLMSourceError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LLMSourceError(f"{path}: expected a JSON object")
    return data


def _remote_code_needed(d: Path, trust: bool, model: bool) -> bool:
    """Whether loading `d` needs the checkpoint's own code; raises when it does and `trust` is False.
    `model`: also require config.json's model_type to be one transformers implements."""
    hint = "set model.trust_remote_code=true only for a checkpoint whose code you trust"
    reasons = []
    for name in ("config.json", "tokenizer_config.json"):
        p = d / name
        if p.is_file() and "auto_map" in (data := _read_json(p)):
            reasons.append(
                f'{p} has "auto_map" ({_short(data["auto_map"])}): loading it runs Python code shipped with the checkpoint'
            )
    if model and (d / "config.json").is_file():
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        model_type = _read_json(d / "config.json").get("model_type")
        if model_type not in CONFIG_MAPPING:
            import transformers

            reasons.append(
                f'{d / "config.json"} has "model_type": {json.dumps(model_type)}, which transformers '
                f"{transformers.__version__} does not implement: only the checkpoint's own code could load it"
            )
    if reasons and not trust:
        raise LLMSourceError(f"{'; '.join(reasons)}; {hint}")
    return bool(reasons)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _weights_plan(d: Path, allow_pickle: bool) -> bool:
    """True: load safetensors; False: pickled weights, allowed. Raises otherwise."""
    if (d / SAFETENSORS).is_file():
        return True
    if (d / SAFETENSORS_INDEX).is_file():
        _check_shards(d, SAFETENSORS_INDEX)
        return True
    pickled = sorted(p.name for p in d.iterdir() if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES))
    if (d / PICKLE_INDEX).is_file():
        pickled = sorted({*pickled, PICKLE_INDEX})
    if not pickled:
        raise LLMNotFoundError(
            f"{d}: no model weights (expected {SAFETENSORS}, or {SAFETENSORS_INDEX} and its shards)"
        )
    if not allow_pickle:
        raise LLMSourceError(
            f"{d}: the only weights are pickled ({', '.join(pickled[:4])}{', ...' if len(pickled) > 4 else ''}), "
            "and unpickling can run code; convert them to safetensors, or set "
            "model.allow_pickle_weights=true for a file you trust (it is then loaded with "
            "torch.load(weights_only=True))"
        )
    if (d / PICKLE_INDEX).is_file():
        _check_shards(d, PICKLE_INDEX)
    elif not (d / PICKLE).is_file():
        raise LLMNotFoundError(
            f"{d}: pickled files {', '.join(pickled[:4])} but no {PICKLE} or {PICKLE_INDEX}, the names "
            "transformers loads; convert the weights to safetensors"
        )
    return False


def _check_shards(d: Path, index_name: str) -> None:
    weight_map = _read_json(d / index_name).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise LLMSourceError(f"{d / index_name}: no weight_map")
    missing = sorted({s for s in weight_map.values() if not (d / s).is_file()})
    if missing:
        raise LLMNotFoundError(
            f"{d / index_name} names {len(missing)} missing shard(s): {', '.join(missing[:8])}"
            f"{', ...' if len(missing) > 8 else ''}; copy the whole checkpoint folder"
        )


# -------------------------------------------------------------------------------------------- load
def load_causal_lm(
    local_dir: str,
    torch_dtype: Any,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> Any:
    """`AutoModelForCausalLM.from_pretrained` on a folder `check_loadable` accepted; local files only."""
    from transformers import AutoModelForCausalLM

    plan = check_loadable(local_dir, trust_remote_code, allow_pickle_weights)
    # Pickled weights: transformers 5.23 reads *.bin through modeling_utils.load_state_dict, whose
    # weights_only defaults to True (modeling_utils.py:320) and goes to
    # torch.load(..., weights_only=weights_only) (:364, after check_torch_load_is_safe() at :357);
    # from_pretrained's own weights_only also defaults to True (:3906). We pass it explicitly anyway,
    # so a changed default cannot turn full unpickling on.
    try:
        return AutoModelForCausalLM.from_pretrained(
            plan.local_dir,
            dtype=torch_dtype,
            trust_remote_code=plan.trust_remote_code,
            use_safetensors=plan.use_safetensors,
            weights_only=True,
            local_files_only=True,
        )
    except pickle.UnpicklingError as e:
        if plan.use_safetensors:
            raise
        # torch's text tells the user to retry with weights_only=False, which this job never does
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"they call {found.group(1)}" if found else type(e).__name__
        raise LLMSourceError(
            f"{plan.local_dir}: the pickled weights hold more than tensors ({why}), which "
            "torch.load(weights_only=True) refuses; convert them to safetensors with a tool you trust"
        ) from e


def load_tokenizer_files(local_dir: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's fast tokenizer, after the same remote-code check; local files only. A slow
    (Python) tokenizer is refused: record text is encoded through its Rust tokenizer.json, with
    added-token matching off (seller_dist.data.text_encoding), which a slow one does not have."""
    from transformers import AutoTokenizer

    d = Path(local_dir)
    needs_code = _remote_code_needed(d, trust_remote_code, model=False)
    tok = AutoTokenizer.from_pretrained(
        str(d), trust_remote_code=trust_remote_code and needs_code, local_files_only=True
    )
    if getattr(tok, "backend_tokenizer", None) is None:
        raise LLMSourceError(
            f"{d}: the tokenizer loads as {type(tok).__name__}, not a fast tokenizer; a tokenizer.json is "
            "needed (save one with the fast tokenizer's save_pretrained)"
        )
    return tok
