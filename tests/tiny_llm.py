"""The tests' tiny LLMs: a random (or briefly trained) Llama built in seconds from bootstrap's own
pieces, and the token ids the synthetic batches of seller_dist.model.synthetic need from it."""

from __future__ import annotations

from pathlib import Path

from seller_dist.model.bootstrap import TINY_CORPUS, build_llama, save_checkpoint, train_lm, train_tokenizer
from seller_dist.model.synthetic import TokenIds


def build_tiny_llm(
    out_dir: str | Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 400,
    train_steps: int = 0,
    seed: int = 0,
    init_std: float = 0.02,
) -> str:
    """A random (or briefly trained) tiny Llama + tokenizer from a few built-in sentences; no data.
    A larger `init_std` gives a random model logits wide enough to be steered by soft prompts
    (at 0.02 the tied output embeddings cap every logit near 1: loss cannot drop far below ln V)."""
    tok = train_tokenizer(TINY_CORPUS * 4, vocab_size)
    model = build_llama(tok, hidden, layers, heads, max_positions=512, seed=seed, init_std=init_std)
    train_lm(model, tok, TINY_CORPUS, train_steps, batch_size=4, max_len=64, seed=seed)
    return save_checkpoint(model, tok, out_dir)


def token_ids_of(llm) -> TokenIds:
    """TokenIds for a FrozenLLM built by bootstrap (needs its <|soft|> token)."""
    if llm.soft_id is None:
        raise ValueError(
            "this LLM's tokenizer has no <|soft|> token; build it with seller-dist bootstrap-llm"
        )
    cfg = llm.model.config
    return TokenIds(int(cfg.vocab_size), llm.pad_id, int(cfg.bos_token_id), int(llm.eos_id), llm.soft_id)
