"""Batches collated ahead in a background thread while the current step runs: a thread, not more
DataLoader workers (a process each), takes collation off the critical path at `data.num_workers: 0`.
The order is the loader's, and `state_dict()` is the cursor of the batches HANDED OUT, not of those
read ahead, so a checkpoint resumes at the very next batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch

_STOP_POLL_S = 0.1


def pin(batch: Any) -> Any:
    if isinstance(batch, dict):
        return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
    return batch


class Prefetcher:
    """Wraps a RankLoader: `next(p)` gives its batches in order; `depth=0` reads synchronously."""

    def __init__(self, loader: Any, depth: int = 1, pin_memory: bool = False):
        self.loader, self.depth, self.pin_memory = loader, depth, pin_memory
        self._state: dict[str, Any] | None = None
        self._it: Iterator[Any] | None = None
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the cursor of what the trainer has taken
    def state_dict(self) -> dict[str, Any]:
        return dict(self._state) if self._state is not None else self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._it is not None or self._thread is not None:
            raise RuntimeError("Prefetcher.load_state_dict after iteration started")
        self.loader.load_state_dict(state)

    @property
    def epoch(self) -> int:
        return int(self.state_dict()["epoch"])

    # ---- batches
    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self.depth == 0:
            if self._it is None:
                self._it = iter(self.loader)
            batch = next(self._it)
            self._state = self.loader.state_dict()
            return pin(batch) if self.pin_memory else batch
        if self._thread is None:
            self._thread = threading.Thread(target=self._fill, name="seller-prefetch", daemon=True)
            self._thread.start()
        kind, batch, state = self._queue.get()
        if kind == "error":
            raise batch
        if kind == "end":
            raise StopIteration
        self._state = state
        return batch

    def _fill(self) -> None:
        try:
            for batch in self.loader:
                item = ("batch", pin(batch) if self.pin_memory else batch, self.loader.state_dict())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=_STOP_POLL_S)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(("end", None, None))
        except BaseException as exc:  # re-raised in the training thread at the next batch
            self._queue.put(("error", exc, None))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
