"""`seller-dist bootstrap-llm`: a small tokenizer + causal LM trained on a prepared dataset's text."""

from __future__ import annotations

import argparse

from seller_dist.cli.options import options_from
from seller_dist.model.bootstrap import BootstrapConfig, bootstrap_llm


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = BootstrapConfig("", "")
    p.add_argument("--data", required=True, help="prepared dataset URL (holds manifest.json)")
    p.add_argument("--out", required=True, help="local directory for the Hugging Face checkpoint")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--steps", type=int, default=d.steps, help="LM training steps (0 = random weights)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (cosine decay to 10 %%)")
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--max-texts", type=int, default=d.max_texts)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--copy-fraction",
        type=float,
        default=d.copy_fraction,
        help="share of train records that also give prompt + explanation with the cited history title "
        "swapped for a random one related to the target in the same way, so the LM learns to copy "
        "titles from its context but not which one to cite (use --max-len 256 to fit long histories)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        print(bootstrap_llm(options_from(BootstrapConfig, args)))
    except ValueError as e:
        raise SystemExit(f"bootstrap-llm: {e}") from None
    return 0
