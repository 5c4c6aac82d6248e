"""Trainer callbacks: the one way code outside the product hooks into a rank's training loop.
A callback subclasses `TrainerCallback` and overrides the hooks it needs; each rank builds the config's
`callbacks` ("module:Class" + `init_args`) and calls them, then those passed to `Trainer`, in that order.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from seller_dist.config import CallbackConfig, ConfigError


class TrainerCallback:
    """Hooks of the training loop; each is a no-op here. `step` is the 1-based optimizer step."""

    def on_rank_start(self, rank: int) -> None:
        """Once per rank, when its process group is up and before its data and model are built."""

    def before_forward(self, inputs: dict[str, Any], rank: int, step: int) -> None:
        """Each micro-batch's model inputs (on the device) before the forward pass; may edit them."""


class CallbackList(TrainerCallback):
    """Several callbacks as one: each hook calls them in list order."""

    def __init__(self, callbacks: Sequence[TrainerCallback] = ()):
        self.callbacks = list(callbacks)

    def on_rank_start(self, rank: int) -> None:
        for cb in self.callbacks:
            cb.on_rank_start(rank)

    def before_forward(self, inputs: dict[str, Any], rank: int, step: int) -> None:
        for cb in self.callbacks:
            cb.before_forward(inputs, rank, step)


def callback_class(spec: CallbackConfig, key: str) -> type[TrainerCallback]:
    """The class `spec.class_path` names, checked to be a TrainerCallback that takes `init_args`
    (ConfigError naming `key` otherwise). Imports the module; constructs nothing."""
    module_name, _, attr = spec.class_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ModuleNotFoundError, or the module itself failing to import
        raise ConfigError(
            f"{key}.class_path: cannot import module '{module_name}' ({type(e).__name__}: {e}); "
            "it must be importable in the driver and on every worker (e.g. inside the job's working_dir)"
        ) from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"{key}.class_path: module '{module_name}' has no '{attr}'")
    if not (inspect.isclass(cls) and issubclass(cls, TrainerCallback)):
        raise ConfigError(
            f"{key}.class_path: {spec.class_path} is not a subclass of "
            "seller_dist.train.callbacks.TrainerCallback"
        )
    try:
        inspect.signature(cls).bind(**spec.init_args)
    except TypeError as e:
        raise ConfigError(f"{key}.init_args: {spec.class_path} does not take {spec.init_args}: {e}") from e
    return cls


def check_callbacks(specs: Sequence[CallbackConfig]) -> None:
    """Import and check every entry without constructing it (preflight, in the driver)."""
    for i, spec in enumerate(specs):
        callback_class(spec, f"callbacks[{i}]")


def build_callbacks(specs: Sequence[CallbackConfig]) -> list[TrainerCallback]:
    """The config's callbacks, constructed in list order as Class(**init_args)."""
    return [callback_class(s, f"callbacks[{i}]")(**s.init_args) for i, s in enumerate(specs)]
