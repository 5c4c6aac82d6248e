"""`seller-dist bootstrap-llm`: a small tokenizer + Llama-style causal LM trained on a prepared
dataset's own text, saved as a normal Hugging Face checkpoint, because closed clusters and CI have
no model hub; any real checkpoint (local or object store, `model.llm_path`) works in its place.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from seller_dist.model.llm import SOFT_TOKEN

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", SOFT_TOKEN]

TINY_CORPUS = [
    "User history: item 1 lamp; item 2 novel; item 3 kettle. Recommended: item 4 drum. Explanation:",
    "because you liked item 7 rake you may like item 9 lamp",
    "because you liked the novel you may like another novel by the same author",
    "the kettle matches your kitchen purchases and the garden rake fits your recent garden views",
    "0 1 2 3 4 5 6 7 8 9 books games garden kitchen music acme globex initech umbrella",
]


def train_bpe(words: dict[str, int], vocab_size: int, alphabet: list[str]) -> tuple[dict[str, int], list]:
    """Byte-pair merges learned from pre-tokenized word counts, ties broken by the pair's text, so the
    same texts give the same tokenizer on every machine (`tokenizers`' BpeTrainer breaks frequency
    ties in hash order: other token ids, hence another frozen LLM, on every run)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(set(alphabet)):
        vocab.setdefault(ch, len(vocab))
    symbols = [list(w) for w in words]
    freqs = list(words.values())
    for w in symbols:
        for ch in w:
            vocab.setdefault(ch, len(vocab))  # characters outside the alphabet (none for byte-level)
    counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, w in enumerate(symbols):
        for pair in zip(w, w[1:], strict=False):
            counts[pair] = counts.get(pair, 0) + freqs[i]
            where.setdefault(pair, set()).add(i)
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size and counts:
        best = min(counts, key=lambda p: (-counts[p], p))
        merged = best[0] + best[1]
        merges.append(best)
        vocab.setdefault(merged, len(vocab))
        for i in sorted(where.pop(best, ())):
            w, f = symbols[i], freqs[i]
            for pair in zip(w, w[1:], strict=False):  # take this word's pairs out, merge, put them back
                counts[pair] -= f
                if not counts[pair]:
                    del counts[pair]  # only this word's last occurrence brings a count to 0
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            symbols[i] = out
            for pair in zip(out, out[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + f
                where.setdefault(pair, set()).add(i)
    return vocab, merges


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE (any UTF-8 text is representable) with our special tokens; deterministic."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    vocab, merges = train_bpe(dict(sorted(words.items())), vocab_size, pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    # BOS is added by the tokenizer itself, as Llama's, Mistral's and Gemma's are: the collator puts
    # BOS where the tokenizer does (none for Qwen's)
    bos = SPECIAL_TOKENS[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        additional_special_tokens=[SOFT_TOKEN],
    )


def build_llama(
    tokenizer,
    hidden: int,
    layers: int,
    heads: int,
    max_positions: int,
    seed: int,
    init_std: float = 0.02,
    intermediate: int = 0,  # 0: 2 x hidden
):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    return LlamaForCausalLM(cfg)


PROMPT_END = " Explanation:"  # where copy_text's prompt ends and its explanation starts


def lm_batch(tokenizer, texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """`bos + text + eos` rows (cut to max_len), right-padded, with their labels: padding ignored,
    and in a copy text (one holding PROMPT_END) the prompt too: the LM must READ the history titles,
    not learn to predict them (with a loss on them, a small LM spends its capacity on a popularity
    prior over titles: docs/model.md). Texts are data: encoded as plain text (no special token from
    their content)."""
    from seller_dist.data.text_encoding import PlainTextEncoder

    plain = PlainTextEncoder(tokenizer)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    heads = [t[: t.index(PROMPT_END) + len(PROMPT_END)] if PROMPT_END in t else "" for t in texts]
    rows = [(bos + ids + eos)[:max_len] for ids in plain.encode(texts, at_start=True)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, head) in enumerate(zip(rows, heads, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, : len(row)] = input_ids[i, : len(row)]
        if head:
            labels[i, : len(bos) + len(plain.encode([head], at_start=True)[0])] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def train_lm(
    model, tokenizer, texts: list[str], steps: int, batch_size: int, max_len: int, seed: int, lr: float = 3e-3
) -> float:
    """A short plain-torch LM fit so generation is not pure noise. Returns the last loss."""
    if not texts or steps <= 0:
        return float("nan")
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    # cosine decay to 10 %: a short fit ends much lower than at a constant rate (copying titles from
    # the context, which the adapter relies on, is the last thing a small LM learns)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.45 * (1 + math.cos(math.pi * min(i, steps) / steps))
    )
    model.train()
    loss_val = float("nan")
    for _ in range(steps):
        out = model(**lm_batch(tokenizer, [rng.choice(texts) for _ in range(batch_size)], max_len))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = float(out.loss.detach())
    model.eval()
    return loss_val


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> str:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # train_lm's padded calls leave padding/truncation on: do not save them
        backend.no_padding()
        backend.no_truncation()
    tokenizer.save_pretrained(str(out))
    return str(out)


def copy_text(
    history_titles: list[str],
    target: str,
    explanation: str,
    rng: random.Random,
    history_attrs: list[dict[str, str]] | None = None,
    target_attrs: dict[str, str] | None = None,
) -> str:
    """A prompt in the collate's layout followed by the record's explanation with the history title it
    names swapped for a RANDOM title of the same history, which the prompt's profile also names
    ("Profile: {title} Explanation:"): the LM learns to cite the title its profile names, not which
    event to cite (docs/model.md, "bootstrap-llm"). With item attributes (`history_attrs` aligned with
    `history_titles`, `target_attrs`) only titles whose items relate to the target as the cited
    one does are drawn, so the explanation stays true."""
    cited = next(
        (t for t in sorted(set(history_titles), key=lambda t: (-len(t), t)) if t and t in explanation), None
    )  # longest first, then by text: "Lamp 12" is not mistaken for "Lamp 1"
    if history_attrs is None or target_attrs is None:
        pool = list(range(len(history_titles))) if cited else []
    else:
        words = explanation
        for t in sorted({*history_titles, target}, key=len, reverse=True):
            words = words.replace(t, " ")  # attribute values the explanation names outside titles
        named = sorted((k, v) for k, v in target_attrs.items() if v and v in words)

        def relation(i: int) -> tuple[bool, ...]:
            return tuple(history_attrs[i].get(k) == v for k, v in named)

        if cited:
            rel = relation(history_titles.index(cited))
            pool = [i for i in range(len(history_titles)) if relation(i) == rel]
        else:
            pool = [i for i in range(len(history_titles)) if named and not any(relation(i))]
    profile = history_titles[rng.choice(pool)] if pool else ""
    if cited:
        explanation = explanation.replace(cited, profile)
    head = f"User history: {'; '.join(history_titles)}. Recommended: {target}. Profile: "
    head += f"{profile}{PROMPT_END}" if profile else PROMPT_END.strip()
    return f"{head} {explanation}"


def dataset_texts(
    url: str, max_texts: int, storage_cfg=None, copy_fraction: float = 0.0, seed: int = 0
) -> Iterator[str]:
    """Explanations, target titles and history titles from the train split, then item titles; with
    `copy_fraction` > 0, that share of train records gives a `copy_text` in place of its explanation,
    target title and history titles."""
    from seller_dist.data.shards import Manifest, iter_tar_samples, read_shard_bytes

    manifest = Manifest.load(url, storage_cfg)
    rng = random.Random(seed)
    attrs: list[dict[str, str]] | None = None  # item idx -> attributes, for copy_text's swap
    if copy_fraction > 0 and manifest.data.get("items", {}).get("shards"):
        from seller_dist.data.catalog import ItemCatalog

        attrs = ItemCatalog.load(manifest.root, manifest, storage_cfg).attributes
    seen = 0
    groups = [manifest.shards("train")] if "train" in manifest.data["splits"] else []
    groups.append(manifest.data.get("items", {}).get("shards", []))
    for shard_list in groups:
        for info in shard_list:
            data = read_shard_bytes(manifest.root, info, storage_cfg)
            for sample in iter_tar_samples(data, info["path"]):
                if "json" not in sample:
                    continue
                rec = json.loads(sample["json"])
                texts = [rec.get("explanation"), rec.get("item_title"), rec.get("title")]
                events = [
                    h
                    for h in rec.get("history", [])
                    if isinstance(h, dict) and isinstance(h.get("title"), str) and h["title"].strip()
                ]
                history = [h["title"] for h in events]
                target = rec.get("item_title")
                explanation = rec.get("explanation")
                if (
                    copy_fraction > 0
                    and history
                    and isinstance(target, str)
                    and isinstance(explanation, str)
                    and rng.random() < copy_fraction
                ):
                    # holds the history titles and an explanation: in place of the plain one, so that
                    # copying is a larger share of what the LM practises
                    hist_attrs = target_attrs = None
                    if attrs is not None and isinstance(rec.get("item_attributes"), dict):
                        idx = [h.get("item_idx") for h in events]
                        if all(isinstance(i, int) and 0 < i < len(attrs) for i in idx):
                            hist_attrs, target_attrs = [attrs[i] for i in idx], rec["item_attributes"]
                    texts = [copy_text(history, target, explanation, rng, hist_attrs, target_attrs)]
                else:
                    texts += history
                for t in texts:
                    if isinstance(t, str) and t.strip():
                        yield t
                        seen += 1
                        if seen >= max_texts:
                            return


# ------------------------------------------------------------------------------------ command line
@dataclass
class BootstrapConfig:
    """`seller-dist bootstrap-llm`: a small tokenizer + causal LM trained on a prepared dataset's text."""

    data: str  # prepared dataset URL (holds manifest.json)
    out: str  # local directory for the Hugging Face checkpoint
    vocab_size: int = 2000
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    steps: int = 200  # LM training steps (0 = random weights)
    batch_size: int = 16
    lr: float = 3e-3  # peak learning rate (cosine decay to 10 %)
    max_len: int = 128
    max_texts: int = 50_000
    seed: int = 0
    # share of train records that also give prompt + explanation with the cited history title swapped
    # for a random one related to the target in the same way: the LM learns to copy titles from its
    # context but not which one to cite (max_len 256 fits long histories)
    copy_fraction: float = 0.0


def bootstrap_llm(cfg: BootstrapConfig) -> str:
    """Train the LLM of `cfg` and save it; returns the checkpoint folder."""
    if cfg.hidden % cfg.heads:
        raise ValueError(f"heads={cfg.heads} must divide hidden={cfg.hidden}")
    t0 = time.monotonic()
    texts = list(dataset_texts(cfg.data, cfg.max_texts, copy_fraction=cfg.copy_fraction, seed=cfg.seed))
    if not texts:
        raise ValueError(f"{cfg.data}: no text found in the train split or the item catalog")
    tok = train_tokenizer(texts, cfg.vocab_size)
    model = build_llama(tok, cfg.hidden, cfg.layers, cfg.heads, max_positions=1024, seed=cfg.seed)
    loss = train_lm(model, tok, texts, cfg.steps, cfg.batch_size, cfg.max_len, cfg.seed, cfg.lr)
    out = save_checkpoint(model, tok, cfg.out)
    n = sum(p.numel() for p in model.parameters())
    log.info(
        "bootstrap-llm: %d texts, vocab %d, %.2fM params, final loss %.3f (ppl %.1f), %.0fs -> %s",
        len(texts),
        len(tok),
        n / 1e6,
        loss,
        math.exp(min(loss, 50)) if loss == loss else float("nan"),
        time.monotonic() - t0,
        out,
    )
    return out
