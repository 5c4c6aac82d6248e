"""Vocabulary sizes the trainable modules need, taken from a dataset manifest (or given by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelVocab:
    """Sizes of the id spaces. Index 0 is padding/unknown everywhere, so tables have size n + 1.
    `attribute_sizes` follows the collate's field order: sorted field names of manifest
    vocab["attribute_fields"]; each field's value index is its position in that list + 1.
    """

    num_items: int
    attribute_sizes: list[int] = field(default_factory=list)
    text_dim: int = 0  # D of the precomputed item-text embedding; 0 = none
    num_users: int = 0  # only the IDs-only (PEPLER-like) prompt uses user ids, when the batch has "user"

    @staticmethod
    def from_manifest(manifest: dict[str, Any]) -> ModelVocab:
        vocab = manifest["vocab"]
        fields = vocab.get("attribute_fields", {})
        return ModelVocab(
            num_items=int(vocab["num_items"]),
            attribute_sizes=[len(fields[name]) for name in sorted(fields)],
            text_dim=int(manifest.get("items", {}).get("embedding_dim", 0) or 0),
            num_users=int(vocab.get("num_users", 0) or 0),
        )
