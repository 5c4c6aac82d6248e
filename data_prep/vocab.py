"""Vocabulary carried over from an earlier dataset (`prep --set vocab_from=URL`), for warm starts: a model
trained on the earlier window has one item-embedding row per item_idx, so `Catalog.build` keeps every earlier
item's index and numbers new items after them, and the manifest's `lineage` (`lineage_entry`) names the parent
by the sha256 of its manifest.json, which a checkpoint records as its dataset's `manifest_sha256`
(docs/data.md, "Lineage").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from seller_dist import storage
from seller_dist.config import ConfigError, StorageConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ACTIONS, SCHEMA_VERSION
from seller_dist.data.shards import MANIFEST_NAME, Manifest


class VocabError(ConfigError):
    """`vocab_from` names no usable earlier dataset; the message names the URL and what to do."""


@dataclass(frozen=True)
class ParentItem:
    """One item of the earlier catalog: its index is kept, its metadata is the fallback."""

    item_id: str
    item_idx: int
    title: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def has_metadata(self) -> bool:
        return bool(self.title or self.attributes or self.text)


@dataclass
class ParentVocab:
    """The earlier dataset's item vocabulary (contiguous item_idx 1..num_items) and its identity."""

    url: str  # dataset root (the folder holding manifest.json)
    manifest_sha256: str  # sha256 of the parent's manifest.json bytes
    num_items: int  # largest (= count of) item_idx in the parent
    actions: list[str]
    items: dict[str, ParentItem]  # item_id -> item, in item_idx order
    lineage: dict[str, Any] | None = None  # the parent's own lineage, when it had one


def dataset_root(url: str) -> str:
    """A dataset URL without a trailing slash or manifest.json (both spellings are accepted)."""
    url = url.rstrip("/")
    return url[: -len(MANIFEST_NAME)].rstrip("/") if url.endswith("/" + MANIFEST_NAME) else url


def load_parent(url: str, storage_cfg: StorageConfig | None = None) -> ParentVocab:
    """Read the earlier dataset's manifest (its bytes' sha256) and item catalog (shards sha256-checked).
    Fails at once, naming the URL, when there is no manifest there, when its actions are not a prefix
    of `schema.ACTIONS`, or when its catalog is not the contiguous 1..num_items prep writes."""
    root = dataset_root(url)
    manifest_url = storage.join(root, MANIFEST_NAME)
    try:
        raw = storage.read_bytes(manifest_url, storage_cfg)
    except FileNotFoundError:
        raise VocabError(
            f"vocab_from: no manifest at {manifest_url}: {url} is not a published dataset (its prep never "
            "ran or did not finish); point vocab_from at the earlier dataset's root, the folder holding "
            f"{MANIFEST_NAME}"
        ) from None
    except Exception as e:  # unreachable store, permissions
        raise VocabError(f"vocab_from: cannot read {manifest_url} ({type(e).__name__}: {e})") from e
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise VocabError(f"vocab_from: {manifest_url} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        got = data.get("schema_version") if isinstance(data, dict) else None
        raise VocabError(
            f"vocab_from: {manifest_url} has schema_version {got!r}; this seller-dist reads "
            f"{SCHEMA_VERSION}: re-run prep for the earlier window with this version"
        )
    vocab = data.get("vocab") or {}
    actions = list(vocab.get("actions") or [])
    if actions != list(ACTIONS[: len(actions)]):
        raise VocabError(
            f"vocab_from: {url} was prepared with actions {actions}, which is not {list(ACTIONS)} or a "
            "prefix of it: action indices would change meaning. Prepare the new window without "
            "vocab_from (a fresh vocabulary) and train it from scratch"
        )
    catalog = ItemCatalog.load(root, Manifest(root, data), storage_cfg)
    items: dict[str, ParentItem] = {}
    for idx in range(1, catalog.num_items + 1):
        iid = catalog.item_ids[idx]
        if not iid:
            raise VocabError(
                f"vocab_from: the item catalog of {url} has no item at item_idx {idx} (of "
                f"{catalog.num_items}): its items/ shards do not match its manifest; re-run its prep"
            )
        if iid in items:
            raise VocabError(
                f"vocab_from: the item catalog of {url} lists item {iid!r} twice (item_idx "
                f"{items[iid].item_idx} and {idx}); re-run its prep"
            )
        items[iid] = ParentItem(
            iid, idx, catalog.titles[idx], dict(catalog.attributes[idx]), catalog.texts[idx]
        )
    return ParentVocab(
        url=root,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        num_items=catalog.num_items,
        actions=actions,
        items=items,
        lineage=data.get("lineage"),
    )


def lineage_entry(parent: ParentVocab) -> dict[str, Any]:
    """The manifest's `lineage` key: which dataset this one keeps the vocabulary of."""
    return {
        "parent": parent.url,
        "parent_manifest_sha256": parent.manifest_sha256,
        "parent_num_items": parent.num_items,
        "depth": int((parent.lineage or {}).get("depth", 0)) + 1,  # windows since the first fresh vocab
    }
