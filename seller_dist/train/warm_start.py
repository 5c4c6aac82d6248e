"""Warm start (`train --set init_from=URL`): a NEW run begins from an earlier run's trainable weights.
Their vocabulary tables are indexed by the earlier dataset, so item rows copy by index or map by item id,
attribute rows map by value, and everything else must match by name and shape; preflight plans it on the
driver and each worker copies the same plan (rules: docs/training.md, "Warm start on a new window").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import yaml

from seller_dist import storage
from seller_dist.config import ConfigError, ModelConfig, StorageConfig, TrainConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.shards import MANIFEST_NAME, Manifest
from seller_dist.train import checkpoint as ck
from seller_dist.train.export import CONFIG_FILE as EXPORT_CONFIG_FILE
from seller_dist.train.export import MOE_PREFIX, TrainedWeights, load_trained
from seller_dist.train.weights_fit import expected_shapes, misfit

log = logging.getLogger(__name__)

# model settings that name files or placement, not shapes: never reported as "differs"
_NOT_SHAPE_KEYS = ("llm_path", "llm_cache_dir", "llm_dtype", "ep_size")


@dataclass
class RowMap:
    """Rows of one vocabulary table: new row r takes the checkpoint's row src[r]; -1 keeps the fresh init."""

    src: torch.Tensor  # long [new rows]
    old_rows: int  # rows the checkpoint's table must have


@dataclass
class WarmStart:
    """The weights to start from and how each tensor lands in the new model."""

    requested: str  # init_from as configured
    trained: TrainedWeights
    kind: Literal["checkpoint", "export"]
    item_rows: Literal["index", "item_id", "none"]  # how item rows were matched ("none": no item table)
    rows: dict[str, RowMap]
    items_carried: int = 0
    items_new: int = 0

    def record(self) -> dict[str, Any]:
        """What the new checkpoints record under train_state.json `init_from`."""
        dataset = self.trained.dataset or {}
        return {
            "url": self.requested,
            "source": self.trained.source,
            "kind": self.kind,
            "step": self.trained.step,
            "sha256": self.trained.sha256,
            "manifest_sha256": self.trained.manifest_sha256,
            "dataset": dataset.get("url"),
            "item_rows": self.item_rows,
            "items_carried": self.items_carried,
            "items_new": self.items_new,
        }

    def summary(self) -> str:
        how = {"index": "by index (lineage)", "item_id": "by item id", "none": "none"}[self.item_rows]
        return (
            f"warm start from {self.trained.source} (step {self.trained.step}): item rows {how}, "
            f"{self.items_carried} carried, {self.items_new} new"
        )


# --------------------------------------------------------------------------------------- shapes
def llm_hidden_size(model_cfg: ModelConfig, storage_cfg: StorageConfig | None = None) -> int:
    """The frozen LLM's hidden size from its config.json alone (no weights are read)."""
    url = storage.join(model_cfg.llm_path, "config.json")
    try:
        conf = storage.read_json(url, storage_cfg)
    except FileNotFoundError:
        raise ConfigError(f"model.llm_path: no config.json at {url}") from None
    try:
        from transformers import AutoConfig

        return int(AutoConfig.for_model(**conf).hidden_size)  # maps n_embd, d_model, ... per model type
    except Exception:
        for key in ("hidden_size", "n_embd", "d_model"):
            if isinstance(conf.get(key), int):
                return int(conf[key])
    raise ConfigError(f"model.llm_path: {url} names no hidden size (hidden_size / n_embd / d_model)")


def config_differences(old: ModelConfig, new: ModelConfig) -> list[str]:
    """'model.key=old in the checkpoint, new here' for every differing model setting but paths."""
    return [
        f"model.{f.name}={getattr(old, f.name)!r} in the checkpoint, {getattr(new, f.name)!r} here"
        for f in dataclasses.fields(ModelConfig)
        if f.name not in _NOT_SHAPE_KEYS and getattr(old, f.name) != getattr(new, f.name)
    ]


# ------------------------------------------------------------------------------- old vocabulary
@dataclass
class OldVocab:
    """Which item / attribute value each row of the checkpoint's tables is (None = not known)."""

    item_ids: list[str] | None = None  # item_ids[i - 1] is item_idx i
    attribute_fields: dict[str, list[str]] | None = None
    where: str = ""


def _trained_dataset_url(trained: TrainedWeights) -> str | None:
    if trained.dataset and trained.dataset.get("url"):
        return str(trained.dataset["url"])
    if trained.train_config:
        try:
            return str(yaml.safe_load(trained.train_config)["data"]["manifest"])
        except (yaml.YAMLError, KeyError, TypeError):
            return None
    return None


def old_vocab(trained: TrainedWeights, storage_cfg: StorageConfig | None, need_items: bool) -> OldVocab:
    """From the checkpoint's dataset.json; else from its dataset, when that still exists with the
    manifest sha256 the checkpoint recorded (a changed dataset would map rows wrongly)."""
    if trained.dataset and "item_ids" in trained.dataset:
        return OldVocab(
            list(trained.dataset["item_ids"]),
            dict(trained.dataset.get("attribute_fields") or {}),
            f"{trained.source} (dataset.json)",
        )
    url = _trained_dataset_url(trained)
    if not url or not trained.manifest_sha256:
        return OldVocab()
    root = url.rstrip("/")
    try:
        raw = storage.read_bytes(storage.join(root, MANIFEST_NAME), storage_cfg)
    except FileNotFoundError:
        log.warning("init_from: the checkpoint's dataset %s is gone; its item ids are unknown", root)
        return OldVocab()
    if hashlib.sha256(raw).hexdigest() != trained.manifest_sha256:
        log.warning("init_from: the dataset at %s changed since the checkpoint was trained", root)
        return OldVocab()
    data = json.loads(raw)
    fields = dict((data.get("vocab") or {}).get("attribute_fields") or {})
    ids = None
    if need_items:
        ids = ItemCatalog.load(root, Manifest(root, data), storage_cfg).item_ids[1:]
    return OldVocab(ids, fields, root)


# ------------------------------------------------------------------------------------------ plan
def plan(
    requested: str,
    trained: TrainedWeights,
    model_cfg: ModelConfig,
    manifest: dict[str, Any],
    manifest_sha256: str,
    hidden_size: int,
    new_item_ids: Callable[[], list[str]],
    storage_cfg: StorageConfig | None = None,
    dataset_url: str = "the dataset",
) -> WarmStart:
    """Match every tensor of `trained` to the model `model_cfg` builds on this dataset, or raise a
    ConfigError naming the key. `new_item_ids()` (item_ids[i - 1] = item_idx i) is only called
    when rows must be mapped by item id."""
    from seller_dist.model.vocab import ModelVocab

    vocab = ModelVocab.from_manifest(manifest)
    shapes, indexed = expected_shapes(model_cfg, vocab, hidden_size)
    weights = trained.weights
    kind: Literal["checkpoint", "export"] = "checkpoint" if ck.is_step_url(trained.source) else "export"
    what = f"init_from: {trained.source}"
    diffs = config_differences(trained.model, model_cfg)
    hint = f" (model settings that differ: {'; '.join(diffs)})" if diffs else ""
    act = "; warm-start with the checkpoint's model settings, or leave init_from unset to start from scratch"

    # --- item rows: by index when the lineage says so, else by item id
    old_sha = trained.manifest_sha256 or (trained.dataset or {}).get("manifest_sha256")
    lineage = manifest.get("lineage") or {}
    item_keys = [k for k, (kind_, _) in indexed.items() if kind_ == "item"]
    old_n = int(trained.vocab.get("num_items", 0))
    new_n = vocab.num_items
    item_src: torch.Tensor | None = None
    item_rows: Literal["index", "item_id", "none"] = "none"
    need_ids = bool(item_keys) and not (
        old_sha and (old_sha == manifest_sha256 or lineage.get("parent_manifest_sha256") == old_sha)
    )
    old = old_vocab(trained, storage_cfg, need_items=need_ids)
    if item_keys and not need_ids:
        item_rows = "index"
        if new_n < old_n:
            raise ConfigError(
                f"{what}: its dataset had {old_n} items but {dataset_url}, which keeps that vocabulary "
                f"(lineage), has only {new_n}: re-run prep with vocab_from"
            )
        item_src = torch.full((new_n + 1,), -1, dtype=torch.long)
        item_src[: old_n + 1] = torch.arange(old_n + 1)
    elif item_keys:
        item_rows = "item_id"
        if old.item_ids is None:
            raise ConfigError(
                f"{what} does not record which item each row of {item_keys[0]} is (no dataset.json, and "
                f"its dataset is gone or changed), and {dataset_url} was not prepared with vocab_from= that "
                "dataset: prepare the new window with `--set vocab_from=<the dataset it was trained on>`, "
                "or leave init_from unset"
            )
        if len(old.item_ids) != old_n:
            raise ConfigError(
                f"{what}: its item table has {old_n} items but {old.where} lists {len(old.item_ids)} item "
                "ids: the checkpoint is inconsistent; warm-start from another checkpoint"
            )
        old_index = {iid: i for i, iid in enumerate(old.item_ids, start=1)}
        ids = new_item_ids()
        item_src = torch.tensor([0] + [old_index.get(iid, -1) for iid in ids], dtype=torch.long)
        if len(item_src) != new_n + 1:
            raise ConfigError(f"init_from: {dataset_url} lists {len(ids)} item ids for {new_n} items")
    rows: dict[str, RowMap] = {}
    for key in item_keys:
        assert item_src is not None
        rows[key] = RowMap(item_src, old_n + 1)
    carried = int((item_src[1:] >= 0).sum()) if item_src is not None else 0

    # --- attribute value rows: by value, the fields themselves must agree
    new_fields = dict((manifest.get("vocab") or {}).get("attribute_fields") or {})
    if old.attribute_fields is not None and any(k == "attribute" for k, _ in indexed.values()):
        if sorted(old.attribute_fields) != sorted(new_fields):
            raise ConfigError(
                f"{what}: was trained with item attribute fields {sorted(old.attribute_fields)}, "
                f"{dataset_url} has {sorted(new_fields)}: per-field parameters (fusion.match, the "
                "attribute tables) would mean other fields; prepare the new window with the same "
                "attribute columns, or leave init_from unset"
            )
        names = sorted(new_fields)
        for key, (kind_, f) in indexed.items():
            if kind_ != "attribute":
                continue
            old_values = old.attribute_fields[names[f]]
            old_pos = {v: i for i, v in enumerate(old_values, start=1)}
            src = [0] + [old_pos.get(v, -1) for v in new_fields[names[f]]]
            rows[key] = RowMap(torch.tensor(src, dtype=torch.long), len(old_values) + 1)

    # --- every tensor must now fit
    def fits(key: str, got: tuple[int, ...], want: tuple[int, ...]) -> bool:
        rm = rows.get(key)
        if rm is None:
            return got == want
        return got[1:] == want[1:] and got[0] == rm.old_rows and len(rm.src) == want[0]

    found = misfit(shapes, weights, fits)
    key = found.first(shapes)
    if key in found.missing:
        raise ConfigError(f"{what} has no tensor {key}, which this model has{hint}{act}")
    if key is not None:
        got, shape = tuple(weights[key].shape), shapes[key]
        if key not in rows:
            raise ConfigError(
                f"{what}: {key} has shape {list(got)} in the checkpoint, {list(shape)} here{hint}{act}"
            )
        raise ConfigError(
            f"{what}: {key} has shape {list(got)} in the checkpoint, {list(shape)} here (rows are "
            f"mapped by id; the other dimensions must agree){hint}{act}"
        )
    if found.unexpected:
        raise ConfigError(f"{what} has {found.unexpected[0]}, which this model has no place for{hint}{act}")
    if diffs:
        log.warning("init_from: shapes fit but model settings differ: %s", "; ".join(diffs))
    return WarmStart(requested, trained, kind, item_rows, rows, carried, new_n - carried if item_keys else 0)


# ----------------------------------------------------------------------------------------- apply
@torch.no_grad()
def load_dense(model: Any, ws: WarmStart) -> None:
    """Copy the dense weights into a SellerModel (before DeepSpeed wraps it); mapped tables row by row."""
    for name, p in model.trainable_named_parameters():
        src = ws.trained.weights[name]
        rm = ws.rows.get(name)
        if rm is None:
            p.copy_(src)
            continue
        keep = rm.src >= 0
        new_rows = keep.nonzero().squeeze(1).to(p.device)
        p.index_copy_(0, new_rows, src[rm.src[keep]].to(device=p.device, dtype=p.dtype))


@torch.no_grad()
def load_moe(moe: Any, ws: WarmStart) -> None:
    """All experts + router into this rank's MoE adapter (it keeps its own expert slice)."""
    if moe is None:
        return
    full = {k[len(MOE_PREFIX) :]: v for k, v in ws.trained.weights.items() if k.startswith(MOE_PREFIX)}
    moe.load_full_state_dict(full)


# ----------------------------------------------------------------------------------- entry points
def _load(cfg: TrainConfig) -> TrainedWeights:
    assert cfg.init_from
    try:
        return load_trained(cfg.init_from, cfg.storage)
    except ck.CheckpointCorruptError as e:
        raise ConfigError(f"init_from: {e}: warm-start from another checkpoint") from e
    except (ck.CheckpointError, FileNotFoundError, ValueError) as e:
        raise ConfigError(
            f"init_from: {e} (give a committed checkpoint …/checkpoints/step-N, a run's checkpoints "
            f"folder, or an export folder holding {EXPORT_CONFIG_FILE})"
        ) from e


def check_init_from(cfg: TrainConfig, manifest_sha256: str) -> WarmStart:
    """Preflight, on the driver: load and plan (raises ConfigError naming the key). Reads the new
    catalog only when rows must be mapped by item id."""
    trained = _load(cfg)
    manifest = Manifest.load(cfg.data.manifest, cfg.data.storage)

    def new_ids() -> list[str]:
        return ItemCatalog.load(cfg.data.manifest, manifest, cfg.data.storage).item_ids[1:]

    return plan(
        cfg.init_from or "",
        trained,
        cfg.model,
        manifest.data,
        manifest_sha256,
        llm_hidden_size(cfg.model, cfg.storage),
        new_ids,
        cfg.storage,
        cfg.data.manifest,
    )


def for_worker(
    cfg: TrainConfig, manifest: dict[str, Any], manifest_sha256: str, item_ids: list[str], hidden_size: int
) -> WarmStart:
    """The same plan on a worker (preflight already refused anything that does not fit)."""
    return plan(
        cfg.init_from or "",
        _load(cfg),
        cfg.model,
        manifest,
        manifest_sha256,
        hidden_size,
        lambda: item_ids,
        cfg.storage,
        cfg.data.manifest,
    )
