"""`seller-dist prep`: raw logs -> validated shards, item catalog and manifest (data_prep.pipeline)."""

from __future__ import annotations

import argparse

from seller_dist.cli.options import add_override_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from data_prep.sources import SOURCE_CLASSES

    parser.description = (
        "Convert raw logs into validated WebDataset shards, an item catalog and a manifest. "
        f"Sources: {', '.join(SOURCE_CLASSES)} (set with --set source=NAME; inputs, options and the "
        "variants of each public format read are in docs/sources.md)."
    )
    parser.add_argument("--config", help="prep YAML (see seller_dist/configs/prep_synthetic.yaml)")
    add_override_argument(parser, "--set output=s3://bucket/data --set source_options.num_users=1000")


def run(args: argparse.Namespace) -> int:
    from data_prep.pipeline import DEFAULT_CONFIG, run_prep
    from seller_dist.config import PrepConfig, load_config
    from seller_dist.data.schema import SPLITS

    cfg = load_config(PrepConfig, args.config or str(DEFAULT_CONFIG), args.overrides)
    manifest = run_prep(cfg)  # PrepError / TooManyBadRecords are UserErrors: the CLI words them
    counts = ", ".join(f"{s}={manifest['splits'][s]['count']}" for s in SPLITS)
    print(f"prepared {cfg.output}: {counts}, items={manifest['items']['count']}")
    return 0
