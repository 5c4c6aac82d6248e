"""Text from data -> token ids, as plain text: the one way record text reaches the LLM's tokenizer.
Its two rules are docs/model.md's "Tokenizers": no special token from data (a review holding "<|eos|>"
stays text), and a prompt unit that continues the text gets no start-of-text prefix marker
(`encode(texts, at_start=False)`), so it has the ids it has inside the whole text.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer


def _without_prefix_rules(node: Any) -> Any:
    """The tokenizer.json normalizer/pre-tokenizer `node` with every start-of-text prefix rule off."""
    if isinstance(node, list):
        return [_without_prefix_rules(n) for n in node if not _is_prepend(n)]
    if not isinstance(node, dict):
        return node
    out = {k: _without_prefix_rules(v) for k, v in node.items()}
    kind = out.get("type")
    if kind == "Metaspace":
        out["prepend_scheme"] = "never"
        if "add_prefix_space" in out:  # tokenizers < 0.14 files
            out["add_prefix_space"] = False
    elif kind == "ByteLevel" and "add_prefix_space" in out:
        out["add_prefix_space"] = False
    return out


def _is_prepend(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "Prepend"


class PlainTextEncoder:
    """Encodes data text with no special-token matching; `at_start` says whether the text begins
    the model's input text (the tokenizer's prefix rule applies) or continues it (it does not)."""

    def __init__(self, tokenizer: Any):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: SELLER needs the tokenizer.json "
                "of a Hugging Face fast tokenizer (save the tokenizer with transformers to get one)"
            )
        spec = json.loads(backend.to_str())
        spec["padding"] = None  # a saved tokenizer.json may carry them: they would pad and cut silently
        spec["truncation"] = None
        for token in spec.get("added_tokens", []):
            token["special"] = True  # encode_special_tokens skips special added tokens only
        self._start = self._backend(spec)
        spec["normalizer"] = _without_prefix_rules(spec.get("normalizer"))
        if _is_prepend(spec["normalizer"]):
            spec["normalizer"] = None
        spec["pre_tokenizer"] = _without_prefix_rules(spec.get("pre_tokenizer"))
        self._continue = self._backend(spec)

    @staticmethod
    def _backend(spec: dict[str, Any]) -> Tokenizer:
        tok = Tokenizer.from_str(json.dumps(spec))
        tok.encode_special_tokens = True
        return tok

    def encode(self, texts: list[str], at_start: bool = False) -> list[list[int]]:
        if not texts:
            return []
        backend = self._start if at_start else self._continue
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
