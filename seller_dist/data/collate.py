"""ExampleRecords -> padded tensors for SELLER: the batch contract the model codes against (every key
and shape: docs/streaming.md, "Collate"). The prompt is tokenized in units whose ids equal the whole
prompt's (docs/model.md, "Prompt tokens are the text's tokens"), so truncation is exact in tokens.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ACTION_INDEX, ExampleRecord
from seller_dist.data.text_encoding import PlainTextEncoder

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


class TitleUnits(NamedTuple):
    """One title's ids as each prompt unit holds it (docs/model.md, "Prompt tokens are the text's tokens")."""

    own: list[int]  # " {t}": the title pointer's ids, as an explanation naming it has them
    sep: list[int]  # " {t};": a history title followed by another
    last: list[int]  # " {t}. Recommended:": the newest history title
    target: list[int]  # " {t}. Profile:": the recommended item


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
        prompt_format: Literal["plain", "chat"] = "plain",
        instruction: str = "",
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
        self._plain = PlainTextEncoder(self.tokenizer)
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
        self.bos = self._bos_ids(tok)
        self.prompt_format = prompt_format
        # chat: the prompt is the user turn and the explanation the assistant turn of the tokenizer's
        # chat template; the template's own text (markers, BOS) is tokenized with its special tokens
        self._chat_user, self._chat_assistant = [], []
        self._explanation_space = " "
        if prompt_format == "chat":
            self.bos, self._chat_user, self._chat_assistant, end = self._chat_parts(tok)
            self.eos_id = end
            self._explanation_space = ""
        elif prompt_format != "plain":
            raise ValueError(f"prompt_format must be 'plain' or 'chat', got {prompt_format!r}")
        self._units: dict[str, TitleUnits] = {}
        first = prompt_format != "chat"  # in a chat the prompt continues the template's text
        # an instruction leads the prompt (an instruct model's zero-shot needs to be asked); the
        # profile and its soft tokens stay right before " Explanation:"
        self._lead = f"{instruction.strip()} User history:" if instruction.strip() else "User history:"
        self._head = self._chat_user + self._plain.encode([self._lead], at_start=first)[0]
        self._head_empty = (
            self._chat_user + self._plain.encode([f"{self._lead}. Recommended:"], at_start=first)[0]
        )
        self._profile, self._suffix = self._encode([". Profile:", " Explanation:"])
        self._suffix = self._suffix + self._chat_assistant
        self._fixed = len(self.bos) + len(self._head_empty) + len(self._profile) + num_soft_tokens
        self._fixed += len(self._suffix)
        if self._fixed > max_prompt_tokens:
            raise ValueError(
                f"max_prompt_tokens={max_prompt_tokens} is smaller than the fixed prompt text plus "
                f"{num_soft_tokens} soft tokens ({self._fixed} tokens): raise max_prompt_tokens"
            )
        self.pieces_match_text = self._pieces_match_text()
        if not self.pieces_match_text:
            log.warning(
                "this tokenizer does not split the prompt units (' {title};' after 'User history:') as it "
                "splits the whole prompt text: the LLM will read prompts tokenized unlike text it was "
                "trained on (SellerCollator supports byte-level BPE and SentencePiece-style tokenizers)"
            )

    @staticmethod
    def _chat_parts(tok: Any) -> tuple[list[int], list[int], list[int], int]:
        """(ids before the user turn's text, ids between it and the assistant's text, the id that
        ends the assistant turn) from the tokenizer's chat template rendered around two markers."""
        if not getattr(tok, "chat_template", None):
            raise ValueError(
                "model.prompt_format=chat needs a tokenizer with a chat template (an instruct "
                "checkpoint's tokenizer_config.json has one); use prompt_format=plain for base models"
            )
        user, assistant = "\x00user\x00", "\x00assistant\x00"
        text = tok.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], tokenize=False
        )
        before, rest = text.split(user)
        between, after = rest.split(assistant)
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in (before, between, after)]
        specials = set(tok.added_tokens_decoder)
        end = next((i for i in ids[2] if i in specials), tok.eos_token_id)  # <|im_end|>, <|eot_id|>, ...
        return [], ids[0], ids[1], int(end)

    @staticmethod
    def _bos_ids(tok: Any) -> list[int]:
        """The ids the tokenizer itself puts before a text (its BOS, or none: Qwen, GPT-2)."""
        bare = tok("a", add_special_tokens=False)["input_ids"]
        full = tok("a", add_special_tokens=True)["input_ids"]
        head = full[: full.index(bare[0])] if bare and bare[0] in full else []
        return [int(i) for i in head if i == tok.bos_token_id]

    def _pieces_match_text(self) -> bool:
        """Whether a sample prompt built from units has the ids of the same text tokenized whole."""
        titles = ["Alpha Lamp 12", "Beta Kettle 3"]
        units = self._title_units(titles)
        head = self._head[len(self._chat_user) :]
        suffix = self._suffix[: len(self._suffix) - len(self._chat_assistant)]
        ids = head + units[0].sep + units[1].last + units[0].target + suffix
        whole = self._plain.encode(
            [f"{self._lead} {titles[0]}; {titles[1]}. Recommended: {titles[0]}. Profile: Explanation:"],
            at_start=self.prompt_format == "plain",
        )[0]
        return ids == whole

    @staticmethod
    def for_dataset(
        manifest_vocab: dict[str, Any], catalog: ItemCatalog, tokenizer: Any, **kw: Any
    ) -> SellerCollator:
        """Collator with L = the dataset's max_history (manifest["vocab"]["max_history"])."""
        if "max_history" not in manifest_vocab:
            raise ValueError("manifest vocab has no max_history: re-run `seller-dist prep`")
        return SellerCollator(tokenizer, catalog, int(manifest_vocab["max_history"]), **kw)

    def title_token_counts(self, limit: int = 10_000) -> list[int]:
        """Token counts of the catalog's titles as the prompt and the title pointer hold them (the
        first `limit` items: a sample of a large catalog)."""
        titles = [t for t in self.catalog.titles[1 : limit + 1] if t]
        return [len(u.own) for u in self._title_units(titles)]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Ids of texts that continue the prompt (no prefix marker, no special token from data)."""
        return self._plain.encode(texts)

    def _title_units(self, titles: list[str]) -> list[TitleUnits]:
        """Titles repeat (they come from the catalog): tokenize each distinct one once per process."""
        missing = list({t for t in titles if t not in self._units})
        if missing:
            if len(self._units) > _TITLE_CACHE_MAX:
                self._units.clear()
            own, sep, last, target = (
                self._encode([f" {t}{end}" for t in missing])
                for end in ("", ";", ". Recommended:", ". Profile:")
            )
            for t, *ids in zip(missing, own, sep, last, target, strict=True):
                self._units[t] = TitleUnits(*ids)
        return [self._units[t] for t in titles]

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
        cited = np.full(B, -1, np.int64)
        nb = self.num_time_buckets
        for b, r in enumerate(records):
            hist = r.history[-L:]
            off = L - len(hist)
            ref = r.meta.get("cited_offset")  # 0 = the newest event, as data_prep/examples.py writes it
            if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(hist):
                cited[b] = L - 1 - ref
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
            # the column of the event the reference explanation cites (-1: none, or cut off by L)
            "hist_cited": torch.from_numpy(cited),
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
    def _prompt(self, titles: list[TitleUnits], target: TitleUnits) -> tuple[list[int], int]:
        """Prompt ids and the index of the first soft token; oldest titles dropped to fit."""
        tail = target.target
        tail_room = self.max_prompt_tokens - self._fixed + len(self._profile)  # with no history
        if len(tail) > tail_room:  # a target title too long alone: cut its own ids
            tail = target.own[: tail_room - len(self._profile)] + self._profile
        room = self.max_prompt_tokens - len(self.bos) - len(self._head) - len(tail) - self.num_soft_tokens
        room -= len(self._suffix)
        chosen: list[TitleUnits] = []  # newest first; the newest is the last one in time order
        used = 0
        for t in reversed(titles):
            cost = len(t.sep) if chosen else len(t.last)
            if used + cost > room:
                break
            chosen.append(t)
            used += cost
        kept = list(reversed(chosen))
        if self.history_text == "sorted":  # here the last one in sorted order has ". Recommended:"
            kept = sorted(chosen, key=lambda t: t.own)
            while kept and sum(len(t.sep) for t in kept[:-1]) + len(kept[-1].last) > room:
                chosen.pop()  # drop the oldest until the sorted text fits
                kept = sorted(chosen, key=lambda t: t.own)
        head = self._head_empty
        if kept:
            head = self._head + [i for t in kept[:-1] for i in t.sep] + kept[-1].last
        head = self.bos + head + tail
        return head + [self.soft_token_id] * self.num_soft_tokens + self._suffix, len(head)

    def _text(self, records: Sequence[ExampleRecord]) -> dict[str, torch.Tensor]:
        L = self.max_history
        hist_titles = [[self._title(ev.title, ev.item_idx) for ev in r.history[-L:]] for r in records]
        flat = [t for ts in hist_titles for t in ts]
        targets = [self._title(r.item_title, r.item_idx) for r in records]
        train = self.mode == "train"
        units = self._title_units(flat + targets)
        out: dict[str, torch.Tensor] = self._title_tensors(
            hist_titles, [u.own for u in units[: len(flat)]], [u.own for u in units[len(flat) :]]
        )
        explanations = (
            self._encode([self._explanation_space + r.explanation for r in records]) if train else []
        )
        pos, n_flat = 0, len(flat)
        seqs, soft_at, prompt_len = [], [], []
        for b in range(len(records)):
            n = len(hist_titles[b])
            ids, s = self._prompt(units[pos : pos + n], units[n_flat + b])
            pos += n
            prompt_len.append(len(ids))
            if train:
                ids = ids + explanations[b][: self.max_target_tokens] + [self.eos_id]
            seqs.append(ids)
            soft_at.append(s)
        B = len(records)
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
