"""`seller-dist` command line: one subcommand per job; each lives in its own module.

seller-dist prep --config prep.yaml [--set key=value ...]     raw logs -> shards (data_prep.pipeline)
seller-dist inspect DATASET_URL                                 read a dataset back and summarize it
seller-dist bootstrap-llm ...                                   tiny tokenizer + causal LM for offline use
seller-dist train --config train.yaml [--set key=value ...]   Ray Train + DeepSpeed training job
seller-dist export CHECKPOINT_URL --out DIR                    trainable weights for plain PyTorch
seller-dist eval --checkpoint URL --data DATASET [--set ...]   distributed evaluation job + report
seller-dist report RUN_A RUN_B ...                              side-by-side table of evaluated runs
seller-dist oracles --data DATASET --out DIR                    oracle explanations scored (synthetic)
seller-dist bench data|train|eval ...                           throughput benchmarks
seller-dist demo                                                the README's end-to-end run
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("data_prep.pipeline", "convert raw logs into validated WebDataset shards + manifest"),
    "inspect": ("seller_dist.data.inspect", "stream a prepared dataset back and print a summary"),
    "bootstrap-llm": ("seller_dist.model.bootstrap", "train a small tokenizer + causal LM for offline runs"),
    "bench": ("seller_dist.bench.cli", "throughput benchmarks (data, train, eval)"),
    "report": ("seller_dist.eval.report", "side-by-side table of several evaluated runs"),
    "train": ("seller_dist.train.driver", "Ray Train + DeepSpeed ZeRO-3 training job (preflight first)"),
    "export": ("seller_dist.train.export", "a committed checkpoint -> safetensors + JSON for plain PyTorch"),
    "eval": ("seller_dist.eval.job", "generate on Ray workers, score text quality, grounding, utility"),
    "oracles": ("seller_dist.eval.oracles", "oracle explanations scored: what each metric can reward"),
    "demo": ("seller_dist.demo", "end-to-end run on the embedded synthetic default"),
}


def main(argv: list[str] | None = None) -> int:
    from seller_dist.ray_cluster import prepare_ray_environment

    prepare_ray_environment()  # before any subcommand module imports ray (seller_dist/ray_cluster.py)
    parser = argparse.ArgumentParser(prog="seller-dist", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):  # the subcommand is not built yet
                continue
            raise
        mod.add_arguments(p)
        modules[name] = mod
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command not in modules:
        parser.error(f"'{args.command}' is not available in this build")
    from seller_dist.config_loader import ConfigError

    try:
        return int(modules[args.command].run(args) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
