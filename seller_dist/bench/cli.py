"""`seller-dist bench data|train|eval|prep`: throughput benchmarks, one module each.

Each benchmark module has `add_arguments(parser)` and `run(args) -> int`; one that is not in this
build yet answers with a clear error instead of disappearing from the help.
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    "data": ("seller_dist.bench.data", "records/s of the shard stream (local disk and S3) vs raw tar reads"),
    "train": ("seller_dist.bench.train", "training step throughput and MFU"),
    "eval": ("seller_dist.bench.eval", "generation / evaluation throughput"),
    "prep": ("seller_dist.bench.prep", "prep events/s and peak RSS per engine, size and format (event logs)"),
}


def _load(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return None
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        mod = _load(module)
        p = sub.add_parser(name, help=help_text if mod else f"{help_text} (not built yet)")
        if mod is not None:
            mod.add_arguments(p)
        p.set_defaults(bench_module=module)


def run(args: argparse.Namespace) -> int:
    mod = _load(args.bench_module)
    if mod is None:
        print(
            f"seller-dist bench {args.benchmark}: not built yet ({args.bench_module} is not part of this "
            "build); available now: "
            + ", ".join(n for n, (m, _) in BENCHMARKS.items() if _load(m) is not None),
            file=sys.stderr,
        )
        return 2
    return int(mod.run(args) or 0)
