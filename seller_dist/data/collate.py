"""ExampleRecords -> padded tensors for SELLER (the contract the model codes against).

Shapes (B batch, L max_history, F attribute fields sorted by name, D text-embedding dim, T text):
  hist_item, hist_action, hist_gap, hist_target_gap  long [B, L]  LEFT-padded with 0 (newest last)
  hist_rating float [B, L] (0.0 when None), hist_mask bool [B, L] (True = real event)
  hist_attrs long [B, L, F] each event's item attributes from the catalog (indexed like item_attrs)
  item long [B], item_attrs long [B, F] (1-based index in the field's sorted vocab, 0 = unknown),
  item_text_emb float [B, D]
  hist_title_ids long [B, L, N], item_title_ids long [B, N]: each title's first N tokens
            (N = the batch's longest title, at most max_title_tokens), -1 after a title's end and
            at padded events; a model reads titles through the frozen LLM's own token embeddings
  train:    input_ids, attention_mask, labels long [B, T] (right padded; labels -100 except the
            explanation tokens and the final eos), soft_mask bool [B, T] (exactly K True per row)
  generate: input_ids, attention_mask long [B, T] (LEFT padded, prompt only), soft_mask bool [B, T]
  keys list[str], references list[str], pad bool [B] (stream padding), meta list[dict]

Prompt: "User history: {t1}; ...; {tn}. Recommended: {target}. Profile:" + K x "<|soft|>" +
" Explanation:" then " {explanation}" + eos. Pieces are tokenized separately and concatenated, so
truncation is exact in tokens. Every title is a piece WITH its leading space (" {t}") and the fixed
pieces end without one, so with a byte-level BPE tokenizer (GPT-2, Llama 3, Qwen, bootstrap-llm's)
the ids equal those of the whole prompt tokenized at once, as the LLM read such text in training,
and a title's ids are the ones an explanation that names it uses (what the title pointer copies
from; tested in test_collate). History titles are dropped from the OLDEST side to fit
max_prompt_tokens (then the target title is cut if it alone is too long; history_text="sorted"
lists the kept titles by token ids, so the text carries no order); the explanation keeps its first
max_target_tokens tokens, then eos. The "<|soft|>" token marks where the adapter's soft
prompt vectors go; its id may lie beyond the LLM's embedding table (the model overwrites those
positions, use `soft_mask`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ACTION_INDEX, ExampleRecord

log = logging.getLogger(__name__)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # collation runs in forked loader workers

SOFT_TOKEN = "<|soft|>"
NUM_TIME_BUCKETS = 32
IGNORE_INDEX = -100
_TITLE_CACHE_MAX = 500_000


def time_bucket(seconds: float, num_buckets: int = NUM_TIME_BUCKETS) -> int:
    """1 + min(num_buckets - 2, floor(log2(1 + seconds))); 0 is reserved for padding."""
    s = max(0, seconds)
    if isinstance(s, (int, np.integer)):
        lg = (1 + int(s)).bit_length() - 1  # exact floor(log2) for integers
    else:
        lg = int(math.floor(math.log2(1.0 + s)))
    return 1 + min(num_buckets - 2, lg)


def load_tokenizer(path_or_tokenizer: Any) -> Any:
    """A Hugging Face tokenizer from a local path (or as given), with the soft token registered."""
    if isinstance(path_or_tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path_or_tokenizer))
    else:
        tok = path_or_tokenizer
    if tok.convert_tokens_to_ids(SOFT_TOKEN) in (None, tok.unk_token_id):
        tok.add_tokens([SOFT_TOKEN], special_tokens=True)
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: SELLER ends every explanation with it")
    return tok


def plain_backend(tokenizer: Any) -> Any:
    """A private copy of the tokenizer's Rust backend with padding and truncation OFF, or None.

    A tokenizer.json can carry padding/truncation settings (transformers 5 leaves the ones of a
    `tokenizer(..., padding=True, truncation=True)` call on the backend, and save_pretrained writes
    them out); `encode_batch` would then pad every text of a call with pad ids to the longest one and
    cut long ones, silently: prompts full of pads and labels that teach them."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(backend.to_str())
    plain.no_padding()
    plain.no_truncation()
    return plain


class SellerCollator:
    """Callable `(records, pad) -> dict` used inside loader workers (see ShardStream.collate_fn)."""

    def __init__(
        self,
        tokenizer: Any,
        catalog: ItemCatalog,
        max_history: int,
        num_soft_tokens: int = 8,
        max_prompt_tokens: int = 256,
        max_target_tokens: int = 64,
        mode: Literal["train", "generate"] = "train",
        num_time_buckets: int = NUM_TIME_BUCKETS,
        max_title_tokens: int = 16,
        history_text: Literal["time", "sorted"] = "time",
    ):
        if history_text not in ("time", "sorted"):
            raise ValueError(f"history_text must be 'time' or 'sorted', got {history_text!r}")
        if mode not in ("train", "generate"):
            raise ValueError(f"mode must be 'train' or 'generate', got {mode!r}")
        if min(max_history, num_soft_tokens, max_target_tokens, max_title_tokens) < 1:
            raise ValueError(
                "max_history, num_soft_tokens, max_target_tokens and max_title_tokens must be >= 1"
            )
        self.tokenizer = load_tokenizer(tokenizer)
        self._backend = plain_backend(self.tokenizer)
        self.catalog = catalog
        self.max_history, self.num_soft_tokens = max_history, num_soft_tokens
        self.max_prompt_tokens, self.max_target_tokens = max_prompt_tokens, max_target_tokens
        self.mode, self.num_time_buckets = mode, num_time_buckets
        self.max_title_tokens, self.history_text = max_title_tokens, history_text
        self.attribute_fields = catalog.attribute_fields
        self._attr_index = [
            {v: i + 1 for i, v in enumerate(catalog.attribute_vocab[f])} for f in self.attribute_fields
        ]
        # item idx -> attribute value indices, for the history events (row 0 = padding: all unknown)
        self._item_attrs = np.zeros((catalog.num_items + 1, len(self.attribute_fields)), np.int64)
        for i, attrs in enumerate(catalog.attributes):
            for f, (name, index) in enumerate(zip(self.attribute_fields, self._attr_index, strict=True)):
                self._item_attrs[i, f] = index.get(attrs.get(name, ""), 0)
        tok = self.tokenizer
        self.soft_token_id = int(tok.convert_tokens_to_ids(SOFT_TOKEN))
        self.eos_id = int(tok.eos_token_id)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.bos = [int(tok.bos_token_id)] if tok.bos_token_id is not None else []
        self._title_ids: dict[str, list[int]] = {}
        self._prefix, self._sep, self._rec, self._profile, self._suffix = self._encode(
            ["User history:", ";", ". Recommended:", ". Profile:", " Explanation:"]
        )  # each title is encoded with its leading space: see the module docstring
        self._fixed = (
            len(self.bos)
            + len(self._prefix)
            + len(self._rec)
            + len(self._profile)
            + num_soft_tokens
            + len(self._suffix)
        )
        if self._fixed > max_prompt_tokens:
            raise ValueError(
                f"max_prompt_tokens={max_prompt_tokens} is smaller than the fixed prompt text plus "
                f"{num_soft_tokens} soft tokens ({self._fixed} tokens): raise max_prompt_tokens"
            )
        self.pieces_match_text = self._pieces_match_text()
        if not self.pieces_match_text:
            log.warning(
                "this tokenizer does not split the prompt pieces (' {title}' after 'User history:') as it "
                "splits the whole prompt text: the LLM will read prompts tokenized unlike text it was "
                "trained on (SellerCollator assumes a byte-level BPE tokenizer such as GPT-2's or Llama 3's)"
            )

    def _pieces_match_text(self) -> bool:
        """Whether a sample prompt built from pieces has the ids of the same text tokenized whole."""
        titles = [" Alpha Lamp 12", " Beta Kettle 3"]
        pieces = self._prefix + self._encode([titles[0]])[0] + self._sep + self._encode([titles[1]])[0]
        pieces += self._rec + self._encode([titles[0]])[0] + self._profile
        whole = self._encode([f"User history:{titles[0]};{titles[1]}. Recommended:{titles[0]}. Profile:"])[0]
        return pieces == whole

    @staticmethod
    def for_dataset(
        manifest_vocab: dict[str, Any], catalog: ItemCatalog, tokenizer: Any, **kw: Any
    ) -> SellerCollator:
        """Collator with L = the dataset's max_history (manifest["vocab"]["max_history"])."""
        if "max_history" not in manifest_vocab:
            raise ValueError("manifest vocab has no max_history: re-run `seller-dist prep`")
        return SellerCollator(tokenizer, catalog, int(manifest_vocab["max_history"]), **kw)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self._backend is not None:  # the Rust tokenizer directly: same ids, less Python per string
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        enc = self.tokenizer(texts, add_special_tokens=False, padding=False, truncation=False)
        return [list(ids) for ids in enc["input_ids"]]

    def _encode_titles(self, titles: list[str]) -> list[list[int]]:
        """Titles repeat (they come from the catalog): tokenize each distinct one once per process."""
        missing = list({t for t in titles if t not in self._title_ids})
        if missing:
            if len(self._title_ids) > _TITLE_CACHE_MAX:
                self._title_ids.clear()
            self._title_ids.update(zip(missing, self._encode([" " + t for t in missing]), strict=True))
        return [self._title_ids[t] for t in titles]

    def _title(self, title: str, idx: int) -> str:
        if title:
            return title
        return self.catalog.titles[idx] if 0 < idx <= self.catalog.num_items else ""

    # --------------------------------------------------------------------------------- history
    def _history(self, records: Sequence[ExampleRecord]) -> dict[str, torch.Tensor]:
        B, L = len(records), self.max_history
        item = np.zeros((B, L), np.int64)
        action = np.zeros((B, L), np.int64)
        gap = np.zeros((B, L), np.int64)
        tgap = np.zeros((B, L), np.int64)
        rating = np.zeros((B, L), np.float32)
        mask = np.zeros((B, L), bool)
        nb = self.num_time_buckets
        for b, r in enumerate(records):
            hist = r.history[-L:]
            off = L - len(hist)
            prev = None
            for j, ev in enumerate(hist):
                c = off + j
                item[b, c] = ev.item_idx
                action[b, c] = ACTION_INDEX[ev.action]
                gap[b, c] = time_bucket(0 if prev is None else ev.timestamp - prev, nb)
                tgap[b, c] = time_bucket(r.timestamp - ev.timestamp, nb)
                rating[b, c] = 0.0 if ev.rating is None else float(ev.rating)
                mask[b, c] = True
                prev = ev.timestamp
        return {
            "hist_item": torch.from_numpy(item),
            "hist_action": torch.from_numpy(action),
            "hist_gap": torch.from_numpy(gap),
            "hist_target_gap": torch.from_numpy(tgap),
            "hist_rating": torch.from_numpy(rating),
            "hist_mask": torch.from_numpy(mask),
            "hist_attrs": torch.from_numpy(self._item_attrs[item]),
        }

    def _item(self, records: Sequence[ExampleRecord]) -> dict[str, torch.Tensor]:
        B, F = len(records), len(self.attribute_fields)
        attrs = np.zeros((B, F), np.int64)
        idx = np.array([r.item_idx for r in records], np.int64)
        for b, r in enumerate(records):
            if not 1 <= r.item_idx <= self.catalog.num_items:
                raise ValueError(
                    f"record {r.key}: item_idx {r.item_idx} is outside the item catalog "
                    f"(1..{self.catalog.num_items}); the dataset and its catalog do not match"
                )
            for f, (name, index) in enumerate(zip(self.attribute_fields, self._attr_index, strict=True)):
                attrs[b, f] = index.get(r.item_attributes.get(name, ""), 0)
        return {
            "item": torch.from_numpy(idx),
            "item_attrs": torch.from_numpy(attrs),
            "item_text_emb": torch.from_numpy(self.catalog.embeddings[idx]),
        }

    def _title_tensors(
        self, hist_titles: list[list[str]], hist_ids: list[list[int]], target_ids: list[list[int]]
    ) -> dict[str, torch.Tensor]:
        """hist_title_ids [B, L, N] (left-padded like the events) and item_title_ids [B, N], -1 = none."""
        B, L = len(hist_titles), self.max_history
        n = max(1, min(self.max_title_tokens, max(len(t) for t in [*hist_ids, *target_ids])))
        hist = np.full((B, L, n), -1, np.int64)
        item = np.full((B, n), -1, np.int64)
        pos = 0
        for b, ts in enumerate(hist_titles):
            off = L - len(ts)
            for j in range(len(ts)):
                ids = hist_ids[pos + j][:n]
                hist[b, off + j, : len(ids)] = ids
            pos += len(ts)
            ids = target_ids[b][:n]
            item[b, : len(ids)] = ids
        return {"hist_title_ids": torch.from_numpy(hist), "item_title_ids": torch.from_numpy(item)}

    # ------------------------------------------------------------------------------------ text
    def _prompt(self, titles: list[list[int]], target: list[int]) -> tuple[list[int], int]:
        """Prompt ids and the index of the first soft token; oldest titles dropped to fit."""
        budget = self.max_prompt_tokens - self._fixed
        target = target[: max(0, budget)]
        budget -= len(target)
        kept: list[list[int]] = []
        for t in reversed(titles):  # newest first
            cost = len(t) + (len(self._sep) if kept else 0)
            if cost > budget:
                break
            kept.append(t)
            budget -= cost
        hist: list[int] = []
        ordered = sorted(kept) if self.history_text == "sorted" else list(reversed(kept))
        for i, t in enumerate(ordered):
            hist += (self._sep if i else []) + t
        head = self.bos + self._prefix + hist + self._rec + target + self._profile
        ids = head + [self.soft_token_id] * self.num_soft_tokens + self._suffix
        return ids, len(head)

    def _text(self, records: Sequence[ExampleRecord]) -> dict[str, torch.Tensor]:
        L = self.max_history
        hist_titles = [[self._title(ev.title, ev.item_idx) for ev in r.history[-L:]] for r in records]
        flat = [t for ts in hist_titles for t in ts]
        targets = [self._title(r.item_title, r.item_idx) for r in records]
        train = self.mode == "train"
        enc = self._encode_titles(flat + targets)
        out: dict[str, torch.Tensor] = self._title_tensors(hist_titles, enc[: len(flat)], enc[len(flat) :])
        if train:
            enc += self._encode([" " + r.explanation for r in records])
        pos, n_flat, B = 0, len(flat), len(records)
        seqs, soft_at, prompt_len = [], [], []
        for b in range(B):
            n = len(hist_titles[b])
            ids, s = self._prompt(enc[pos : pos + n], enc[n_flat + b])
            pos += n
            prompt_len.append(len(ids))
            if train:
                ids = ids + enc[n_flat + B + b][: self.max_target_tokens] + [self.eos_id]
            seqs.append(ids)
            soft_at.append(s)
        T = max(len(s) for s in seqs)
        input_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, T), dtype=torch.long)
        soft = torch.zeros((B, T), dtype=torch.bool)
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long) if train else None
        K = self.num_soft_tokens
        for b, ids in enumerate(seqs):
            off = 0 if train else T - len(ids)  # right padding to train, left padding to generate
            input_ids[b, off : off + len(ids)] = torch.tensor(ids, dtype=torch.long)
            attn[b, off : off + len(ids)] = 1
            soft[b, off + soft_at[b] : off + soft_at[b] + K] = True
            if labels is not None:
                labels[b, prompt_len[b] : len(ids)] = input_ids[b, prompt_len[b] : len(ids)]
        out.update(input_ids=input_ids, attention_mask=attn, soft_mask=soft)
        if labels is not None:
            out["labels"] = labels
        return out

    def __call__(self, records: Sequence[ExampleRecord], pad: Sequence[bool] | None = None) -> dict[str, Any]:
        if not records:
            raise ValueError("cannot collate an empty batch")
        out: dict[str, Any] = {**self._history(records), **self._item(records), **self._text(records)}
        out["keys"] = [r.key for r in records]
        out["references"] = [r.explanation for r in records]
        out["pad"] = torch.tensor(list(pad) if pad is not None else [False] * len(records), dtype=torch.bool)
        out["meta"] = [dict(r.meta) for r in records]
        return out
