"""`seller-dist experiment --config EXPERIMENT.yaml`: systems x seeds -> one results table."""

from __future__ import annotations

import argparse

from seller_dist.cli.options import add_override_argument, add_verbose_argument, wants_quiet
from seller_dist.config import ConfigError, ExperimentConfig, load_config
from seller_dist.experiment import markdown, run_experiment


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (configs/experiments/*.yaml)")
    add_override_argument(p, "--set budget.max_steps=200 --set seeds=[0,1,2] --set out=outputs/exp1")
    p.add_argument("--systems", default="", help="comma-separated: run only these systems of the config")
    p.add_argument("--seeds", default="", help="comma-separated: run only these seeds of the config")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: rewrite results.json/md from the finished cells",
    )
    add_verbose_argument(p)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(ExperimentConfig, args.config, args.overrides)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got '{args.seeds}'") from None
    results = run_experiment(cfg, systems or None, seeds or None, args.table_only, quiet=wants_quiet(args))
    print(markdown(results))
    return 0
