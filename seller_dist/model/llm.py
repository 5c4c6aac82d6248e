"""The frozen LLM: load any Hugging Face causal LM, place soft prompts into its input, score, generate.
Its weights never change (no gradient, eval mode even while the rest trains), and position ids come
from the attention mask so that left and right padding give the same positions (docs/model.md,
"Frozen LLM").
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seller_dist.config import StorageConfig
from seller_dist.model.llm_family import LLMFamily, describe
from seller_dist.model.llm_source import load_causal_lm, load_tokenizer_files, resolve_llm_path

__all__ = ["DTYPES", "SOFT_TOKEN", "FrozenLLM", "GenerationConfig", "resolve_llm_path"]

log = logging.getLogger(__name__)

SOFT_TOKEN = "<|soft|>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    # Under ZeRO-3 every rank must run the same number of forwards (each gathers parameters):
    # keep stepping until max_new_tokens even when this rank's rows have all finished.
    sync_ranks: bool = False
    # the title pointer (model.title_pointer) at generation: "hard" = the soft prompt names the top
    # supporting event's title alone (the event the generations file reports first), "trained" = as
    # in training. Soft training + hard generation gave the best grounding margin (docs/evaluation.md)
    pointer: str = "hard"


class FrozenLLM(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        pad_id: int,
        eos_id: int | None,
        soft_id: int | None = None,
        family: LLMFamily | None = None,
    ):
        super().__init__()
        self.model = model
        self.pad_id, self.soft_id = pad_id, soft_id
        self.family = family
        # generation stops at any of the family's eos ids (Llama 3 Instruct: end_of_text and eot_id)
        self.eos_ids: tuple[int, ...] = tuple(family.eos_ids) if family else ()
        if eos_id is not None and eos_id not in self.eos_ids:
            self.eos_ids = (eos_id, *self.eos_ids)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        # what `generate` decodes with: None = its own dynamic-cache loop; the eval
        # job sets a StaticDecoder (generation.decode: static, seller_dist/eval/decode.py)
        self.decoder: Any = None

    @staticmethod
    def from_pretrained(
        path: str,
        dtype: str = "float32",
        cache_dir: str = ".cache/llm",
        storage_cfg: StorageConfig | None = None,
        trust_remote_code: bool = False,
        allow_pickle_weights: bool = False,
    ) -> FrozenLLM:
        """Under ZeRO-3, create `HfDeepSpeedConfig` BEFORE calling this (seller_dist.train.strategy).
        What may be loaded (remote code, pickled weights) is checked first (llm_source)."""
        local = resolve_llm_path(path, cache_dir, storage_cfg)
        model = load_causal_lm(local, DTYPES[dtype], trust_remote_code, allow_pickle_weights)
        tok = load_tokenizer_files(local, trust_remote_code)
        family = describe(model.config, tok, model.get_input_embeddings())
        log.info("%s: %s", path, family.summary())
        soft = tok.convert_tokens_to_ids(SOFT_TOKEN)
        soft = None if soft is None or soft == tok.unk_token_id else int(soft)
        eos = family.eos_ids[0] if family.eos_ids else None
        return FrozenLLM(model, family.pad_id, eos, soft, family)

    @property
    def eos_id(self) -> int | None:
        """The eos id labels end with (the first of `eos_ids`); setting it makes it the only one."""
        return self.eos_ids[0] if self.eos_ids else None

    @eos_id.setter
    def eos_id(self, value: int | None) -> None:
        self.eos_ids = () if value is None else (int(value),)

    @property
    def embed_scale(self) -> float:
        """The factor the model's embedding module applies to token embeddings (Gemma: sqrt(hidden));
        the adapter's soft vectors get it too (llm_family)."""
        if self.family is not None:
            return self.family.embed_scale
        return float(getattr(self.embedding, "scalar_embed_scale", 1.0))

    def compile_layers(self) -> None:
        """torch.compile each decoder layer: fuses the norms, rotary and activation kernels that an
        activation-gradient-only backward leaves as a large share of the step (BENCHMARKS.md).
        Identical layers share one compiled graph."""
        for layer in self.model.get_decoder().layers:
            layer.compile()

    def train(self, mode: bool = True) -> FrozenLLM:
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off
        return self

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def embedding(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def embed_with_soft(
        self, input_ids: torch.Tensor, soft_mask: torch.Tensor, soft: torch.Tensor | None
    ) -> torch.Tensor:
        """inputs_embeds [B, T, H]; soft [B, K, H] or None (soft positions keep the pad embedding)."""
        ids = input_ids.masked_fill(soft_mask, self.pad_id)
        embeds = self.embedding(ids)
        if soft is None:
            return embeds
        b, k, _ = soft.shape
        counts = soft_mask.sum(dim=1)
        if not bool((counts == k).all()):
            raise ValueError(
                f"soft_mask must mark exactly K={k} positions per row (model.num_soft_tokens), "
                f"got {counts.tolist()}: the collate and the model config disagree"
            )
        rows, cols = soft_mask.nonzero(as_tuple=True)  # row-major: each row's positions in order
        return embeds.index_put((rows, cols), soft.reshape(b * k, -1).to(embeds.dtype))

    @staticmethod
    def positions(attention_mask: torch.Tensor) -> torch.Tensor:
        return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)

    def lm_loss(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross entropy over label tokens (labels != -100), next-token shifted, fp32 logits;
        computed only from the first position any row has a label at (`logits_to_keep`): the same
        loss, without the LM head's time and memory over prompt and soft positions."""
        target = labels[:, 1:]
        cols = (target != -100).any(dim=0).nonzero()
        first = int(cols[0]) if len(cols) else target.shape[1] - 1
        kwargs = {"logits_to_keep": target.shape[1] + 1 - first} if self._keeps_logits else {}
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=self.positions(attention_mask),
            use_cache=False,
            **kwargs,
        )
        logits = out.logits[:, -(target.shape[1] + 1 - first) : -1].float()
        target = target[:, first:]
        if not len(cols):
            return logits.sum() * 0.0  # keeps the graph (every rank must run the same backward)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    def generate(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        gen: GenerationConfig,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue LEFT-padded prompts given as embeddings. Returns new token ids [B, <=max_new]
        (pad after a row's eos). Greedy is deterministic; sampling uses `generator`. Decodes through
        `self.decoder` when one is set (the same tokens, tests/unit/test_eval_decode.py)."""
        if self.decoder is not None:
            return self.decoder.generate(embeds, attention_mask, gen, generator)
        # otherwise Hugging Face's dynamic KV cache, one forward per new token
        b = embeds.shape[0]
        mask = attention_mask.long()
        pos = self.positions(mask)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True)
        past = out.past_key_values
        last_pos = pos[:, -1:]
        logits = out.logits[:, -1].float()
        done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
        tokens = []
        for step in range(gen.max_new_tokens):
            nxt = self._pick(logits, gen, generator)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            tokens.append(nxt)
            for eos in self.eos_ids:
                done = done | (nxt == eos)
            if step == gen.max_new_tokens - 1 or (bool(done.all()) and not gen.sync_ranks):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last_pos = last_pos + 1
            out = self.model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=last_pos,
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1].float()
        if not tokens:
            return torch.zeros((b, 0), dtype=torch.long, device=embeds.device)
        return torch.stack(tokens, dim=1)

    @staticmethod
    def _pick(logits: torch.Tensor, gen: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
        if not gen.do_sample:
            return logits.argmax(dim=-1)
        scaled = logits / max(gen.temperature, 1e-5)
        probs = torch.softmax(scaled, dim=-1)
        if gen.top_p < 1.0:
            # sort the LOGITS, stably: near-equal logits can round to equal probabilities, and the
            # kept top token must be the one greedy decoding (argmax, first of ties) would pick
            idx = scaled.sort(dim=-1, descending=True, stable=True).indices
            sorted_p = probs.gather(-1, idx)
            keep = sorted_p.cumsum(dim=-1) - sorted_p < gen.top_p  # always keeps the top token
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
