"""What a person sees of a job: stage lines and our workers' progress lines on the console, the rest
(Ray's and DeepSpeed's own output, library warnings) in the run's log file; `--verbose` shows it all.
`stage_console` is what train, demo and experiment run inside. More than logging (logs.py), since
most of what must stay off the console never passes this process's loggers: C-level writes to file
descriptors 1 and 2, libraries' prints at import, and every worker's lines that Ray forwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from seller_dist.logs import stage_log

CONSOLE_TAGS = ("[train]", "[eval]")  # worker lines a person sees (rank 0's progress and stage lines)
# Ray has no public per-line hook (log_to_driver=False would drop our workers' progress lines too), so
# lines are routed by the prefix Ray puts on every line it forwards from a worker or actor:
# "(RayTrainWorker pid=7681) ", "(pid=7681, ip=10.0.0.2) ", "(raylet) ", "(autoscaler +2s) ", colored
# unless RAY_COLOR_PREFIX=0
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
_stage = stage_log(__name__)


def shown_path(path: str | os.PathLike) -> str:
    """A path as the console shows it: relative to the working directory when it is inside it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def local_log_path(folder_url: str, name: str) -> Path:
    """`<folder>/<name>` for a local folder; `outputs/logs/<name>` (here) for an object-store URL."""
    from seller_dist import storage

    if storage.protocol_of(folder_url) == "file":
        return Path(folder_url.removeprefix("file://")).absolute() / name
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


@contextlib.contextmanager
def stage_console(tag: str, log_path: str | os.PathLike, quiet: bool = True) -> Iterator[Path | None]:
    """`quiet_console(log_path)` plus the one line that says where the rest of the output goes; a
    no-op when not quiet. What train, demo and experiment run inside."""
    if not quiet:
        yield None
        return
    with quiet_console(log_path) as path:
        _stage.info(
            "[%s] Ray's and DeepSpeed's own output: %s (--verbose: on the console)", tag, shown_path(path)
        )
        yield path


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())
