"""`seller-dist eval`: the eval job (seller_dist.eval.job.evaluate) of a checkpoint, then its report."""

from __future__ import annotations

import argparse

from seller_dist.cli.options import add_override_argument
from seller_dist.config import EvalConfig, load_config
from seller_dist.eval.job import ZERO_SHOT, evaluate
from seller_dist.eval.report import markdown


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", default=None, help=f"checkpoint / checkpoints folder / export / {ZERO_SHOT}"
    )
    p.add_argument("--data", default=None, help="dataset root (the folder holding manifest.json)")
    p.add_argument("--out", default=None, help="output folder for generations.jsonl and the report")
    p.add_argument("--config", default=None, help="eval YAML (EvalConfig); flags and --set override it")
    add_override_argument(p, "--set workers.num_workers=4 --set generation.do_sample=true")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for key in ("checkpoint", "data", "out"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    results = evaluate(load_config(EvalConfig, args.config, overrides))
    print(markdown(results))
    return 0
