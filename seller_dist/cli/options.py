"""Options several commands share: `--set KEY=VALUE` overrides and a command's own `--verbose`;
`options_from`, a command's typed options from its parsed arguments."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

VERBOSE_HELP = "show Ray's and DeepSpeed's own output on the console (otherwise in the run's log file)"


def add_override_argument(
    parser: argparse.ArgumentParser, example: str, dest: str = "overrides", what: str = "a config key"
) -> None:
    """The `--set KEY=VALUE` option every config-driven command takes (repeatable, dotted keys)."""
    parser.add_argument(
        "--set",
        dest=dest,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what} (dotted, repeatable), e.g. {example}",
    )


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """A job's `--verbose`: Ray's and DeepSpeed's own output on the console, not in the log file."""
    parser.add_argument("--verbose", dest="show_all", action="store_true", help=VERBOSE_HELP)


def wants_quiet(args: argparse.Namespace) -> bool:
    """A command's console is quiet unless its own `--verbose` (show_all) or the global one is given."""
    return not (getattr(args, "show_all", False) or getattr(args, "verbose", False))


def options_from(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass `cls` from the parsed arguments named like its fields; a field the arguments
    lack (an option parsed with argparse.SUPPRESS as its default) keeps the dataclass's default."""
    given: dict[str, Any] = vars(args)
    return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})
