"""`seller-dist inspect URL`: read a prepared dataset back in full and print a summary. Every shard
goes through the training stream's reader and every record is validated, so a corrupt shard or an
invalid record stops it naming the shard, record and field: an integrity check after a copy.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from seller_dist.config import StorageConfig
from seller_dist.data import shards
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import SPLITS
from seller_dist.data.stream import ShardStream


def summarize(root: str, storage_cfg: StorageConfig | None = None) -> dict[str, Any]:
    """Read and validate everything under `root`; returns the summary (also what `inspect` prints)."""
    manifest = shards.Manifest.load(root, storage_cfg)
    out: dict[str, Any] = {"root": manifest.root, "splits": {}, "sample": None}
    for split in SPLITS:
        if split not in manifest.data["splits"]:
            continue
        lengths: list[int] = []
        sources: Counter = Counter()
        users: set[str] = set()
        if manifest.count(split):
            # the training reader's own shard fetch + decode: sha256, counts, key, split and schema
            stream = ShardStream(
                manifest, split, batch_size=1, shuffle=False, rank=0, world_size=1, storage_cfg=storage_cfg
            )
            for shard in range(len(stream.shard_infos)):
                for s in stream.read_shard(shard):
                    rec = stream.decode(s, shard)
                    lengths.append(len(rec.history))
                    sources[rec.explanation_source] += 1
                    users.add(rec.user_id)
                    if out["sample"] is None:
                        out["sample"] = json.loads(s["json"])
        lengths.sort()
        n = len(lengths)
        out["splits"][split] = {
            "records": n,
            "shards": len(manifest.shards(split)),
            "users": len(users),
            "history_len": {
                "min": lengths[0] if n else 0,
                "median": lengths[n // 2] if n else 0,
                "mean": round(sum(lengths) / n, 3) if n else 0.0,
                "max": lengths[-1] if n else 0,
            },
            "explanation_sources": dict(sorted(sources.items())),
        }
    catalog = ItemCatalog.load(manifest.root, manifest, storage_cfg)  # sha256 + embeddings checked
    out["items"] = {"records": catalog.num_items, "embedding_dim": catalog.embedding_dim}
    out["vocab"] = {k: v for k, v in manifest.data.get("vocab", {}).items() if k != "attribute_fields"}
    prep = manifest.data.get("prep") or {}
    out["split"] = {"mode": prep.get("split", "time"), "rule": prep.get("split_rule")}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"dataset {summary['root']}"]
    split = summary.get("split") or {}
    if split:
        rule = f": {split['rule']}" if split.get("rule") else ""
        lines.append(f"  split: {split['mode']}{rule}")
    for split, s in summary["splits"].items():
        h = s["history_len"]
        lines.append(
            f"  {split:5s}: {s['records']} records in {s['shards']} shards, {s['users']} users, "
            f"history length min/median/mean/max {h['min']}/{h['median']}/{h['mean']}/{h['max']}, "
            f"explanations {s['explanation_sources']}"
        )
    lines.append(
        f"  items: {summary['items']['records']} (embedding dim {summary['items']['embedding_dim']})"
    )
    lines.append(f"  vocab: {summary['vocab']}")
    if summary["sample"] is not None:
        sample = dict(summary["sample"])
        sample["history"] = sample["history"][-3:]
        lines.append("  sample record (last 3 history events):")
        lines.append("    " + json.dumps(sample, ensure_ascii=False, sort_keys=True)[:1500])
    return "\n".join(lines)
