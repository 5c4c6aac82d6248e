"""What differs between LLM families, read from a checkpoint's config and tokenizer in one place.
SELLER feeds the frozen LLM `inputs_embeds` and reads its logits, so it meets each family's
conventions at a few points only (special ids, embedding scale, sliding window); `describe` gathers
them for the loader's log line and the code that handles each (docs/model.md, "LLM families").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# model_type values tested end to end (tests/integration/test_llm_families.py)
TESTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text")


@dataclass(frozen=True)
class LLMFamily:
    model_type: str
    pad_id: int
    eos_ids: tuple[int, ...]  # the first is the one the collator ends labels with
    embed_scale: float  # applied to token ids' embeddings inside the model's embedding module
    sliding_window: int | None
    final_logit_softcapping: float | None
    tied_embeddings: bool

    @property
    def tested(self) -> bool:
        return self.model_type in TESTED_MODEL_TYPES

    def summary(self) -> str:
        parts = [f"LLM family {self.model_type}{'' if self.tested else ' (not tested with SELLER)'}"]
        parts.append(f"pad id {self.pad_id}, eos ids {list(self.eos_ids)}")
        if self.embed_scale != 1.0:
            parts.append(f"embedding scale {self.embed_scale:g}")
        if self.final_logit_softcapping:
            parts.append(f"logit soft-cap {self.final_logit_softcapping:g}")
        if self.sliding_window:
            parts.append(f"sliding window {self.sliding_window}")
        parts.append("tied embeddings" if self.tied_embeddings else "untied embeddings")
        return ", ".join(parts)

    def window_warning(self, max_tokens: int) -> str | None:
        """A warning when prompt + explanation (`max_tokens`) outgrows the attention window."""
        if self.sliding_window and max_tokens > self.sliding_window:
            return (
                f"{self.model_type}: sliding_window={self.sliding_window} is shorter than "
                f"max_prompt_tokens + max_target_tokens = {max_tokens}: explanation tokens past the "
                "window reach the soft prompt only through lower layers"
            )
        return None


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def describe(config: Any, tokenizer: Any = None, embedding: Any = None) -> LLMFamily:
    """The family facts SELLER needs from a transformers config (+ tokenizer, + input embedding)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    eos = _ids(getattr(tokenizer, "eos_token_id", None)) + _ids(getattr(text_config, "eos_token_id", None))
    eos = list(dict.fromkeys(eos))  # the tokenizer's first: it ends the labels
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(text_config, "pad_token_id", None)
    if pad is None and eos:
        pad = eos[0]
    if pad is None:
        raise ValueError(
            f"{config.model_type}: neither the tokenizer nor the config names a pad or eos token; "
            "SELLER ends every explanation with eos"
        )
    scale = getattr(embedding, "scalar_embed_scale", None)
    if scale is None:
        scale = getattr(embedding, "embed_scale", 1.0)
    window = getattr(text_config, "sliding_window", None)
    if getattr(text_config, "use_sliding_window", True) is False:  # Qwen2/3 carry a window but skip it
        window = None
    return LLMFamily(
        model_type=str(text_config.model_type),
        pad_id=int(pad),
        eos_ids=tuple(eos),
        embed_scale=float(scale),
        sliding_window=int(window) if window else None,
        final_logit_softcapping=getattr(text_config, "final_logit_softcapping", None),
        tied_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
