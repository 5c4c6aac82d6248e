"""Checks that run in the driver BEFORE any Ray worker starts, so a bad config costs seconds, not a
cluster allocation: config, the `callbacks` classes, manifest, writable storage_path, LLM path, the run's
newest committed checkpoint and whether `init_from` weights fit this model and dataset. Every failure is a
ConfigError whose message names the key and says what to change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec

from seller_dist import storage
from seller_dist.config import ConfigError, StorageConfig, TrainConfig, validate_tree
from seller_dist.data.shards import MANIFEST_NAME
from seller_dist.train import checkpoint as ck
from seller_dist.train.callbacks import check_callbacks

log = logging.getLogger(__name__)


@dataclass
class PreflightResult:
    manifest_url: str
    manifest_sha256: str
    checkpoints_root: str
    resume_from: str | None  # URL of the newest committed checkpoint, None for a fresh run
    resume_step: int = 0
    init_from: dict[str, Any] | None = None  # a fresh run's warm start (WarmStart.record()), if any
    init_summary: str = ""


def _fast_fs(url: str, cfg: StorageConfig) -> tuple[Any, str]:
    """A filesystem that gives up after one attempt with short timeouts: preflight reports an
    unreachable endpoint in about a second instead of retrying for minutes."""
    opts = storage.storage_options(url, cfg)
    if storage.protocol_of(url) in ("s3", "s3a"):
        opts["config_kwargs"] = {
            "retries": {"max_attempts": 1, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 15,
        }
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


def _endpoint_hint(url: str, cfg: StorageConfig) -> str:
    if storage.protocol_of(url) not in ("s3", "s3a"):
        return "check that the path exists and is writable"
    ep = storage.endpoint_url(cfg) or "the AWS default"
    return (
        f"check the endpoint ({ep}; set storage.endpoint_url or AWS_ENDPOINT_URL), that the bucket exists, "
        "and the credentials in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a role)"
    )


def check_manifest(cfg: TrainConfig) -> tuple[str, str]:
    """(manifest URL, sha256 of its bytes); a missing manifest means prep never finished."""
    url = storage.join(cfg.data.manifest, MANIFEST_NAME)
    scfg = cfg.data.storage
    try:
        fs, path = _fast_fs(url, scfg)
        raw = fs.cat_file(path)
    except FileNotFoundError as e:
        raise ConfigError(
            f"data.manifest: no manifest at {url}: run seller-dist prep (a prep whose manifest is missing "
            "did not finish), or point data.manifest at a prepared dataset root"
        ) from e
    except Exception as e:  # unreachable store, permissions
        raise ConfigError(f"data.manifest: cannot read {url} ({e}); {_endpoint_hint(url, scfg)}") from e
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"data.manifest: {url} is not valid JSON ({e}): re-run seller-dist prep") from e
    splits = manifest.get("splits", {}) if isinstance(manifest, dict) else {}
    if cfg.data.split not in splits:
        raise ConfigError(
            f"data.split: '{cfg.data.split}' is not in {url} (splits: {sorted(splits)}); choose one of those"
        )
    return url, hashlib.sha256(raw).hexdigest()


def check_storage_path(cfg: TrainConfig) -> None:
    """Write and delete a probe object under <storage_path>/<run_name>/."""
    probe = storage.join(cfg.storage_path, cfg.run_name, f".preflight-{uuid.uuid4().hex[:12]}")
    scfg = cfg.storage
    try:
        fs, path = _fast_fs(probe, scfg)
        if storage.protocol_of(probe) == "file":
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, b"seller-dist preflight probe\n")
        fs.rm_file(path)
    except Exception as e:
        raise ConfigError(
            f"storage_path: cannot write to {cfg.storage_path} (probe {probe}: {type(e).__name__}: {e}); "
            f"{_endpoint_hint(cfg.storage_path, scfg)}"
        ) from e


def check_llm_path(cfg: TrainConfig) -> None:
    path = cfg.model.llm_path
    if not path:
        raise ConfigError(
            "model.llm_path is empty: give a local or s3:// Hugging Face checkpoint directory "
            "(`seller-dist bootstrap-llm` builds a tiny one for offline runs)"
        )
    if storage.protocol_of(path) == "file":  # a missing folder, no config.json, a hub id: llm_source says
        from seller_dist.model.llm_source import LLMSourceError, resolve_llm_path

        try:
            resolve_llm_path(path, cfg.model.llm_cache_dir, cfg.storage)
        except LLMSourceError as e:
            raise ConfigError(str(e)) from None
        return
    url = storage.join(path, "config.json")
    scfg = cfg.storage
    try:
        fs, remote = _fast_fs(url, scfg)
        found = fs.exists(remote)
    except Exception as e:
        raise ConfigError(f"model.llm_path: cannot reach {url} ({e}); {_endpoint_hint(url, scfg)}") from e
    if not found:
        raise ConfigError(f"model.llm_path: no config.json at {url}: upload the checkpoint directory there")


def check_resume(cfg: TrainConfig) -> tuple[str, str | None, int]:
    root = ck.checkpoints_root(cfg.storage_path, cfg.run_name)
    try:
        latest = ck.latest_committed(root, cfg.storage, verify=True)
    except ck.CheckpointCorruptError as e:
        raise ConfigError(
            f"{e}: delete that step folder to resume from the one before it, or start a new run_name"
        ) from e
    return root, (latest.url if latest else None), (latest.step if latest else 0)


def preflight(cfg: TrainConfig) -> PreflightResult:
    """Run every check in order of cost; the first failure raises ConfigError."""
    validate_tree(cfg)  # includes model.ep_size | num_experts and ep_size | workers.num_workers
    check_callbacks(cfg.callbacks)  # each class imported and its init_args bound, none constructed
    manifest_url, manifest_sha = check_manifest(cfg)
    check_llm_path(cfg)
    check_storage_path(cfg)
    root, resume_url, resume_step = check_resume(cfg)
    init, summary = None, ""
    if resume_url:
        log.info("resuming run %s from %s", cfg.run_name, resume_url)
        if cfg.init_from:
            log.warning(
                "init_from=%s is ignored: run %s resumes from its own checkpoint %s (resume takes "
                "precedence; use a new run_name to warm-start)",
                cfg.init_from,
                cfg.run_name,
                resume_url,
            )
    elif cfg.init_from:
        from seller_dist.train.warm_start import check_init_from

        warm = check_init_from(cfg, manifest_sha)
        init, summary = warm.record(), warm.summary()
    return PreflightResult(manifest_url, manifest_sha, root, resume_url, resume_step, init, summary)
