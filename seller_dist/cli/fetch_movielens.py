"""`seller-dist fetch-movielens [--dest DIR]`: the real MovieLens-100K atomic files, from the recbole
wheel on PyPI, into the folder the MovieLens experiment configs read (prep.inputs.dir)."""

from __future__ import annotations

import argparse

DEFAULT_DEST = ".cache/recbole"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dest",
        default=DEFAULT_DEST,
        help=f"the files land in DEST/ml-100k; the wheel stays in DEST/wheel (default {DEFAULT_DEST})",
    )


def run(args: argparse.Namespace) -> int:
    from data_prep.sources.recbole import fetch_movielens_100k

    print(fetch_movielens_100k(args.dest))
    return 0
