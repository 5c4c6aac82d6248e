"""`seller-dist report RUN_A RUN_B ...`: the side-by-side table of several evaluated runs."""

from __future__ import annotations

import argparse
import sys

from seller_dist.eval.report import comparison_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", help="evaluated run folders (holding report.json) or report.json paths"
    )


def run(args: argparse.Namespace) -> int:
    try:
        table = comparison_table(list(args.runs))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    return 0
