"""The item catalog in memory: item idx -> title, attributes, text, text embedding. A dense table
because the collator looks up the target item's text embedding for every sample and the model's
item vocabulary is indexed by `item_idx` (1-based; row 0 is padding and stays zero).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from seller_dist.config import StorageConfig
from seller_dist.data.schema import RecordError
from seller_dist.data.sentence_embeddings import npy_load
from seller_dist.data.shards import Manifest, iter_tar_samples, read_shard_bytes


@dataclass
class ItemCatalog:
    titles: list[str]  # [num_items + 1], index 0 = ""
    attributes: list[dict[str, str]]  # [num_items + 1]
    texts: list[str]  # [num_items + 1]
    embeddings: np.ndarray  # float32 [num_items + 1, D]; row 0 zeros; D = 0 without embeddings
    attribute_vocab: dict[str, list[str]] = field(default_factory=dict)  # field -> sorted values
    item_ids: list[str] = field(default_factory=list)  # [num_items + 1], index 0 = ""

    @property
    def num_items(self) -> int:
        return len(self.titles) - 1

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def attribute_fields(self) -> list[str]:
        return sorted(self.attribute_vocab)

    @staticmethod
    def load(
        root: str,
        manifest: Manifest | None = None,
        storage_cfg: StorageConfig | None = None,
        verify: bool = True,
    ) -> ItemCatalog:
        """Read the items/ shards listed in the manifest (sha256 checked) into dense tables."""
        manifest = manifest or Manifest.load(root, storage_cfg)
        items = manifest.data.get("items") or {}
        vocab = manifest.data.get("vocab") or {}
        num_items = int(vocab.get("num_items", items.get("count", 0)))
        dim = int(items.get("embedding_dim", 0) or 0)
        titles, texts, ids = [""] * (num_items + 1), [""] * (num_items + 1), [""] * (num_items + 1)
        attrs: list[dict[str, str]] = [{} for _ in range(num_items + 1)]
        emb = np.zeros((num_items + 1, dim), dtype=np.float32)
        for info in items.get("shards", []):
            url = f"{manifest.root}/{info['path']}"
            for s in iter_tar_samples(read_shard_bytes(manifest.root, info, storage_cfg, verify), url):
                key = s["__key__"]
                if "json" not in s:
                    raise RecordError("json", "item entry without a .json member", key, url)
                try:
                    d = json.loads(s["json"])
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RecordError("json", f"not valid UTF-8 JSON: {e}", key, url) from None
                idx = d.get("item_idx")
                if not isinstance(idx, int) or not 1 <= idx <= num_items:
                    raise RecordError("item_idx", f"must be in [1, {num_items}], got {idx!r}", key, url)
                titles[idx], texts[idx] = d.get("title", ""), d.get("text", "")
                attrs[idx], ids[idx] = dict(d.get("attributes", {})), d.get("item_id", key)
                if dim:
                    if "emb.npy" not in s:
                        raise RecordError("emb.npy", f"missing ({dim}-d embedding expected)", key, url)
                    vec = npy_load(s["emb.npy"])
                    if vec.shape != (dim,):
                        raise RecordError("emb.npy", f"shape {vec.shape}, expected ({dim},)", key, url)
                    emb[idx] = vec.astype(np.float32)
        fields = vocab.get("attribute_fields", {})
        return ItemCatalog(titles, attrs, texts, emb, {f: sorted(v) for f, v in sorted(fields.items())}, ids)
