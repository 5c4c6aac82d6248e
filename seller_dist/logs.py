"""Logging for the commands (what `seller-dist` sets up in cli.main): a job's stage lines
(`[demo] 1/8 ...`) are INFO records of its module's `stage_log`, shown as they are on stdout; every
other record goes to stderr with time, level and logger. seller_dist/console.py moves what logging
cannot reach into a run's log file."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # every record but a stage line
_STAGE = "stage_line"  # the attribute that marks a stage line's record


def stage_log(name: str) -> logging.LoggerAdapter:
    """The logger of a job's stage lines (`[demo] 1/8 ...`): INFO records of the logger `name` that
    the console shows as they are, on stdout."""
    return logging.LoggerAdapter(logging.getLogger(name), {_STAGE: True})


def _is_stage(record: logging.LogRecord) -> bool:
    return bool(getattr(record, _STAGE, False))


class _StageHandler(logging.StreamHandler):
    """Stage lines as they are, on whatever sys.stdout is when they are logged (a quiet console's
    router, a test's capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.addFilter(_is_stage)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # under the handler's lock
        super().emit(record)


def setup_logging(verbose: bool = False) -> None:
    """A command's console: its stage lines on stdout (`stage_log`); every other record at INFO
    (DEBUG when `verbose`) on stderr as LOG_FORMAT."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=level, format=LOG_FORMAT)  # a no-op where logging is set up already
    for handler in root.handlers:
        if handler not in before:
            handler.addFilter(lambda record: not _is_stage(record))
    ours = logging.getLogger("seller_dist")
    ours.setLevel(level)  # stage lines show even where the root logger is at WARNING
    if not any(isinstance(h, _StageHandler) for h in ours.handlers):
        ours.addHandler(_StageHandler())
