"""Synthetic model batches in the collate's exact format, for tests and throughput benchmarks.
The explanation tokens are a function of the target item, its first attribute and the most recent
history event, so a model that reads those through its soft prompts can learn them and a text-only
prompt cannot; rows get different history and text lengths, so padding paths are exercised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seller_dist.data.schema import ACTIONS
from seller_dist.model.vocab import ModelVocab


@dataclass
class TokenIds:
    vocab_size: int
    pad: int
    bos: int
    eos: int
    soft: int
    first_word: int = 4  # ids below this are special tokens


def explanation_tokens(item: int, attr0: int, last_item: int, length: int, ids: TokenIds) -> list[int]:
    span = ids.vocab_size - ids.first_word
    return [ids.first_word + (item * 7 + attr0 * 3 + last_item * 11 + j * 13) % span for j in range(length)]


def title_ids(items: torch.Tensor, ids: TokenIds, max_len: int = 4) -> torch.Tensor:
    """[..., max_len] title tokens of each item (1 + item % 3 of them, -1 after; all -1 at item 0)."""
    span = ids.vocab_size - ids.first_word
    j = torch.arange(max_len)
    tokens = ids.first_word + (items[..., None] * 5 + j * 17) % span
    real = (j < 1 + items[..., None] % 3) & (items[..., None] > 0)
    return torch.where(real, tokens, torch.full_like(tokens, -1))


def synthetic_batch(
    vocab: ModelVocab,
    ids: TokenIds,
    num_soft: int,
    batch_size: int,
    hist_len: int,
    seed: int = 0,
    mode: str = "train",
    num_time_buckets: int = 32,
    explanation_len: int = 4,
    prompt_len: tuple[int, int] = (2, 5),
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rint(lo: int, hi: int, shape=()) -> torch.Tensor:  # inclusive
        return torch.randint(lo, hi + 1, shape, generator=g)

    b, length, f = batch_size, hist_len, len(vocab.attribute_sizes)
    n_real = rint(1, length, (b,))
    hist_mask = torch.arange(length)[None, :] >= (length - n_real)[:, None]  # LEFT padded
    z = ~hist_mask

    def hist(lo: int, hi: int) -> torch.Tensor:
        return rint(lo, hi, (b, length)).masked_fill(z, 0)

    batch: dict[str, torch.Tensor] = {
        "hist_item": hist(1, vocab.num_items),
        "hist_action": hist(1, len(ACTIONS)),
        "hist_gap": hist(1, num_time_buckets - 1),
        "hist_target_gap": hist(1, num_time_buckets - 1),
        "hist_rating": (torch.rand((b, length), generator=g) * 5).masked_fill(z, 0.0),
        "hist_mask": hist_mask,
        "item": rint(1, vocab.num_items, (b,)),
        "item_attrs": torch.stack([rint(0, n, (b,)) for n in vocab.attribute_sizes], dim=1)
        if f
        else torch.zeros((b, 0), dtype=torch.long),
        "item_text_emb": torch.randn((b, vocab.text_dim), generator=g),
    }
    # each item's attributes are a function of the item, as in a catalog
    sizes = torch.tensor(vocab.attribute_sizes, dtype=torch.long)
    batch["hist_attrs"] = ((batch["hist_item"][..., None] * (3 + torch.arange(f))) % (sizes + 1)) * (
        batch["hist_item"][..., None] > 0
    )
    batch["hist_title_ids"] = title_ids(batch["hist_item"], ids)
    batch["item_title_ids"] = title_ids(batch["item"], ids)
    rows, labels = [], []
    for i in range(b):
        text = rint(ids.first_word, ids.vocab_size - 1, (int(rint(*prompt_len)),)).tolist()
        prompt = [ids.bos, *text, *([ids.soft] * num_soft)]
        attr0 = int(batch["item_attrs"][i, 0]) if f else 0
        expl = explanation_tokens(
            int(batch["item"][i]), attr0, int(batch["hist_item"][i, -1]), explanation_len, ids
        )
        if mode == "train":
            rows.append(prompt + expl + [ids.eos])
            labels.append([-100] * len(prompt) + expl + [ids.eos])
        else:
            rows.append(prompt)
    t = max(len(r) for r in rows)
    input_ids = torch.full((b, t), ids.pad, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    lab = torch.full((b, t), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if mode == "train" else slice(t - len(r), t)  # train right, generate left
        input_ids[i, sl] = torch.tensor(r)
        attention[i, sl] = 1
        if mode == "train":
            lab[i, sl] = torch.tensor(labels[i])
    batch.update(input_ids=input_ids, attention_mask=attention, soft_mask=input_ids == ids.soft)
    if mode == "train":
        batch["labels"] = lab
    return batch
