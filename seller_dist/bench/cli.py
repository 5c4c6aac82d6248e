"""`seller-dist bench data|train|eval|prep`: throughput benchmarks, one module each.

Each benchmark module has `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, tuple[str, str]] = {
    "data": ("seller_dist.bench.data", "records/s of the shard stream (local disk and S3) vs raw tar reads"),
    "train": ("seller_dist.bench.train", "training step throughput and MFU"),
    "eval": ("seller_dist.bench.eval", "generation / evaluation throughput"),
    "prep": ("seller_dist.bench.prep", "prep events/s and peak RSS per engine, size and format (event logs)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(bench_module=module)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args.bench_module).run(args) or 0)
