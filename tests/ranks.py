"""Test ranks forked from a warm server: `spawn_ranks` is `torch.multiprocessing.spawn` for the tests.

A spawned rank starts a fresh interpreter and imports torch, transformers, DeepSpeed and the modules
they load lazily while a Trainer is built: most of a tiny test run's CPU, paid again by every rank
the suite starts. A forkserver imports all of that once (tests/rank_preload.py) and forks each rank
from it. Only imports run in the server (no thread pool, no process group), so forking it is safe. A
forked rank inherits the server's environment, not the test's; `spawn_ranks` hands each rank the
environment, stdout and stderr of the moment it is spawned (multiprocessing carries sys.path, cwd).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable
from typing import Any


def _rank(rank: int, fn: Callable[..., Any], parent: int, env: dict[str, str], *args: Any) -> None:
    os.environ.clear()
    os.environ.update(env)
    for fd in (1, 2):  # the spawning test's stdout/stderr (pytest's capture files), not the server's
        with contextlib.suppress(OSError):
            target = os.open(f"/proc/{parent}/fd/{fd}", os.O_WRONLY | os.O_APPEND)
            os.dup2(target, fd)
            os.close(target)
    fn(rank, *args)


def spawn_ranks(fn: Callable[..., Any], args: tuple = (), nprocs: int = 2) -> None:
    """`fn(rank, *args)` on `nprocs` processes forked from the warm server; raises like
    `torch.multiprocessing.spawn` when a rank fails."""
    import torch.multiprocessing as mp

    multiprocessing.get_context("forkserver").set_forkserver_preload(["tests.rank_preload"])
    mp.start_processes(
        _rank,
        args=(fn, os.getpid(), dict(os.environ), *args),
        nprocs=nprocs,
        join=True,
        start_method="forkserver",
    )
