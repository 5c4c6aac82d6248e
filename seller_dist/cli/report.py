"""`seller-dist report RUN_A RUN_B ...`: the side-by-side table of several evaluated runs."""

from __future__ import annotations

import argparse

from seller_dist.eval.report import comparison_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", help="evaluated run folders (holding report.json) or report.json paths"
    )


def run(args: argparse.Namespace) -> int:
    print(comparison_table(list(args.runs)))  # a run without report.json: the CLI words the error
    return 0
