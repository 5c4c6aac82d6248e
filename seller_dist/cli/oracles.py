"""`seller-dist oracles --data DATASET --out DIR`: oracle explanations scored beside the systems."""

from __future__ import annotations

import argparse

from seller_dist import storage
from seller_dist.cli.options import add_override_argument
from seller_dist.config import EvalConfig, load_config
from seller_dist.eval.oracles import POLICIES, oracles_artifact, run_oracles
from seller_dist.eval.report import comparison_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a dataset prepared from the synthetic source")
    p.add_argument("--out", required=True, help="folder for oracle-<policy>/generations.jsonl and reports")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of {list(POLICIES)}")
    p.add_argument("--seed", type=int, default=0, help="draws of random_related and max_match ties")
    p.add_argument("--config", default=None, help="eval YAML (EvalConfig) for the scoring options")
    p.add_argument(
        "--artifact",
        default=None,
        help="also write every policy's report and the run's provenance to this JSON",
    )
    add_override_argument(p, "--set text.bertscore=false --set simulator.learned=false")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(EvalConfig, args.config, [*args.overrides, f"data={args.data}"])
    policies = [p for p in args.policies.split(",") if p]
    run_oracles(cfg, args.out, policies, args.seed)
    print(comparison_table([storage.join(args.out, f"oracle-{p}") for p in policies]))
    if args.artifact:
        storage.write_json(args.artifact, oracles_artifact(cfg, args.out, policies, args.seed))
    return 0
