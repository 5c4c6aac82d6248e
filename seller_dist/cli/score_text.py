"""`seller-dist score-text`: the eval job's text metrics on any system's prediction and reference files."""

from __future__ import annotations

import argparse

from seller_dist import storage
from seller_dist.cli.options import add_override_argument
from seller_dist.config import EvalConfig, load_config
from seller_dist.eval.score_text import format_table, score_files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", required=True, help="the system's texts (.txt/.json/.jsonl/.pkl)")
    p.add_argument("--references", required=True, help="the reference texts, aligned with --predictions")
    p.add_argument("--prediction-field", default=None, help="jsonl: the key holding the prediction")
    p.add_argument("--reference-field", default=None, help="jsonl: the key holding the reference")
    p.add_argument("--limit", type=int, default=0, help="score only the first N pairs (0 = all)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here (local path or URL)")
    p.add_argument("--config", default=None, help="eval YAML (EvalConfig) for the text options")
    add_override_argument(p, "--set text.bertscore=false")


def _command_args(args: argparse.Namespace) -> list[str]:
    """This invocation's arguments, rebuilt from the parsed ones (main() may be called with any argv)."""
    out = ["--predictions", args.predictions, "--references", args.references]
    for flag, value in (
        ("--prediction-field", args.prediction_field),
        ("--reference-field", args.reference_field),
        ("--limit", args.limit or None),
        ("--out", args.out),
        ("--config", args.config),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out + [a for o in args.overrides for a in ("--set", o)]


def run(args: argparse.Namespace) -> int:
    # score-text reads no dataset; EvalConfig requires one, so a placeholder stands in for it
    cfg = load_config(EvalConfig, args.config, ["data=unused", *args.overrides])
    command = ["seller-dist", "score-text", *_command_args(args)]
    result = score_files(
        args.predictions,
        args.references,
        cfg,
        args.prediction_field,
        args.reference_field,
        args.limit,
        command,
    )
    if args.out:
        storage.write_json(args.out, result)
    print(format_table(result["text"]))
    return 0
