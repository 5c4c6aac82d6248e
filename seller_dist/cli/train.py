"""`seller-dist train`: load the train config and run the training job (seller_dist.train.driver)."""

from __future__ import annotations

import argparse

from seller_dist.cli.options import add_override_argument, add_verbose_argument, wants_quiet
from seller_dist.config import TrainConfig, load_config
from seller_dist.train.driver import default_config_path, train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="train YAML (default: the embedded demo config)")
    add_override_argument(p, "--set max_steps=200 --set data.manifest=s3://b/data")
    add_verbose_argument(p)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(TrainConfig, args.config or default_config_path(), args.overrides)
    train(cfg, quiet=wants_quiet(args))
    return 0
