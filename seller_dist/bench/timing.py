"""Time spent inside collectives, per operation, for the step-time split of `seller-dist bench train`:
every collective entry point of torch.distributed is wrapped (a synchronous call timed whole, an
asynchronous one through its handle's `wait()`), so the sum is the communication a rank actually
waited for, which DeepSpeed's comms logger cannot give (it times the call, and ZeRO-3 launches its
all-gathers with `async_op=True`). Bytes are counted per call for docs/scaling.md; the wrapped
functions get the same arguments, so no result changes."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# op name -> the torch.distributed functions that implement it (kind used in reports)
OPS: dict[str, str] = {
    "all_gather_into_tensor": "all_gather",
    "_all_gather_base": "all_gather",
    "all_gather": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter",
    "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter": "reduce_scatter",
    "all_reduce": "all_reduce",
    "all_reduce_coalesced": "all_reduce",
    "reduce": "all_reduce",
    "all_to_all_single": "all_to_all",
    "all_to_all": "all_to_all",
    "broadcast": "broadcast",
    "barrier": "barrier",
}


def _nbytes(x: Any) -> int:
    if torch.is_tensor(x):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    return 0


def payload_bytes(name: str, args: tuple, kwargs: dict[str, Any]) -> int:
    """Bytes this rank contributes/receives: the full gathered tensor for all-gathers, the input for
    reduce-scatter / all-to-all, the tensor for all-reduce and broadcast."""
    if name in ("all_gather_into_tensor", "_all_gather_base"):
        t = kwargs.get("output_tensor", args[0] if args else None)
    elif name in ("reduce_scatter_tensor", "_reduce_scatter_base"):
        t = kwargs.get("input", kwargs.get("input_tensor", args[1] if len(args) > 1 else None))
    elif name in ("all_to_all_single", "all_to_all"):
        t = kwargs.get("input", kwargs.get("input_tensor_list", args[1] if len(args) > 1 else None))
    elif name == "all_gather":
        t = kwargs.get("tensor_list", args[0] if args else None)
    elif name == "reduce_scatter":
        t = kwargs.get("input_list", args[1] if len(args) > 1 else None)
    else:
        t = kwargs.get("tensor", kwargs.get("tensors", args[0] if args else None))
    return _nbytes(t)


class _TimedWork:
    """Proxy of a torch.distributed Work whose wait() is added to the clock."""

    def __init__(self, work: Any, clock: CommClock, kind: str):
        self._work, self._clock, self._kind = work, clock, kind

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._work.wait(*args, **kwargs)
        finally:
            self._clock.sync()
            self._clock.add(self._kind, time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._work, name)


@dataclass
class CommClock:
    """Cumulative seconds waited in collectives (total and per kind), calls and bytes per kind."""

    sync: Callable[[], None] = lambda: None
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    total: float = 0.0
    _depth: int = 0

    def __call__(self) -> float:
        return self.total

    def add(self, kind: str, seconds: float) -> None:
        self.total += seconds
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {
            k: {
                "seconds": self.seconds.get(k, 0.0),
                "calls": self.calls.get(k, 0),
                "bytes": self.bytes.get(k, 0),
            }
            for k in sorted(set(self.seconds) | set(self.calls))
        }

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        kind = OPS[name]

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # called from inside another timed collective: counted there
                return fn(*args, **kwargs)
            self.calls[kind] = self.calls.get(kind, 0) + 1
            self.bytes[kind] = self.bytes.get(kind, 0) + payload_bytes(name, args, kwargs)
            self.sync()
            t0 = time.perf_counter()
            self._depth += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                self._depth -= 1
            if kwargs.get("async_op") and out is not None:
                self.add(kind, time.perf_counter() - t0)  # the launch; the wait is timed on the handle
                return _TimedWork(out, self, kind)
            self.sync()
            self.add(kind, time.perf_counter() - t0)
            return out

        timed.__wrapped_comm_clock__ = True  # type: ignore[attr-defined]
        return timed

    def install(self) -> CommClock:
        """Wrap the collectives in torch.distributed and torch.distributed.distributed_c10d; call it
        before `deepspeed.init_distributed`, which keeps references to the functions it finds."""
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d

        for mod in (dist, c10d):
            for name in OPS:
                fn = getattr(mod, name, None)
                if fn is not None and not getattr(fn, "__wrapped_comm_clock__", False):
                    setattr(mod, name, self._wrap(name, fn))
        return self
