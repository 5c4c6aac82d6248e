"""The train config's `callbacks` (seller_dist.train.callbacks): "module:Class" + init_args from YAML
or `--set`, a one-line ConfigError naming the entry for a bad one (at load for the form, in preflight
for the import, before any other check), and the callbacks built and called in list order with the
rank and step they are given. No Ray, no Trainer: tests/integration/test_train_resume.py's NaN test
runs them inside real ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seller_dist.config import CallbackConfig, ConfigError, TrainConfig, from_dict, load_config, to_dict
from seller_dist.train.callbacks import CallbackList, TrainerCallback, build_callbacks, check_callbacks
from seller_dist.train.preflight import preflight
from tests.fault_callbacks import NanInputs, RecordCalls, WritePidFile, entry, override


def one_line_error(specs: list[dict]) -> str:
    cfg = load_config(TrainConfig, None, [override(*specs)])
    with pytest.raises(ConfigError) as e:
        check_callbacks(cfg.callbacks)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_set_override_and_yaml_give_typed_entries_that_round_trip(tmp_path: Path) -> None:
    cfg = load_config(TrainConfig, None, [override(entry(WritePidFile, pid_dir="/tmp/a b"))])
    assert cfg.callbacks == [CallbackConfig("tests.fault_callbacks:WritePidFile", {"pid_dir": "/tmp/a b"})]
    assert from_dict(TrainConfig, to_dict(cfg)).callbacks == cfg.callbacks  # what a Ray worker gets
    # the plain YAML flow form a person types after --set, and a config file
    flow = "callbacks=[{class_path: tests.fault_callbacks:NanInputs, init_args: {rank: 1, step: 2}}]"
    assert load_config(TrainConfig, None, [flow]).callbacks == [
        CallbackConfig("tests.fault_callbacks:NanInputs", {"rank": 1, "step": 2})
    ]
    p = tmp_path / "train.yaml"
    p.write_text(
        "callbacks:\n  - class_path: tests.fault_callbacks:NanInputs\n    init_args: {rank: 0, step: 3}\n"
    )
    assert load_config(TrainConfig, p).callbacks[0].init_args == {"rank": 0, "step": 3}
    assert TrainConfig().callbacks == []


def test_a_malformed_entry_fails_at_load_naming_it() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, ["callbacks=[{class_path: tests.fault_callbacks.NanInputs}]"])
    assert str(e.value) == (
        "callbacks[0].class_path: 'tests.fault_callbacks.NanInputs' is not 'package.module:Class'"
    )
    with pytest.raises(ConfigError, match=r"^callbacks\[0\]: expected a mapping for CallbackConfig"):
        load_config(TrainConfig, None, ["callbacks=[tests.fault_callbacks:NanInputs]"])
    with pytest.raises(ConfigError, match=r"^unknown config key 'callbacks\[1\]\.args'"):
        load_config(
            TrainConfig, None, [override(entry(NanInputs, rank=0, step=1), {"class_path": "a:B", "args": {}})]
        )


def test_a_bad_import_path_class_or_init_args_is_one_line_naming_the_entry() -> None:
    ok = entry(WritePidFile, pid_dir="/tmp")
    assert one_line_error([ok, {"class_path": "tests.no_such_module:Hook"}]) == (
        "callbacks[1].class_path: cannot import module 'tests.no_such_module' (ModuleNotFoundError: "
        "No module named 'tests.no_such_module'); it must be importable in the driver and on every "
        "worker (e.g. inside the job's working_dir)"
    )
    assert one_line_error([{"class_path": "tests.fault_callbacks:NoSuchHook"}]) == (
        "callbacks[0].class_path: module 'tests.fault_callbacks' has no 'NoSuchHook'"
    )
    assert one_line_error([{"class_path": "tests.fault_callbacks:entry"}]) == (
        "callbacks[0].class_path: tests.fault_callbacks:entry is not a subclass of "
        "seller_dist.train.callbacks.TrainerCallback"
    )
    msg = one_line_error([entry(NanInputs, rank=1, stp=2)])
    assert msg.startswith("callbacks[0].init_args: tests.fault_callbacks:NanInputs does not take "), msg
    assert one_line_error([entry(NanInputs, rank=1)]).startswith("callbacks[0].init_args: ")


def test_preflight_checks_the_callbacks_before_anything_it_must_reach(tmp_path: Path) -> None:
    """The manifest is missing too: the callback entry is what preflight names, before any I/O."""
    cfg = load_config(
        TrainConfig,
        None,
        [f"data.manifest={tmp_path / 'nowhere'}", override({"class_path": "tests.no_such_module:Hook"})],
    )
    with pytest.raises(ConfigError, match=r"^callbacks\[0\]\.class_path: cannot import module"):
        preflight(cfg)


def test_callbacks_are_built_in_order_and_called_in_order_with_rank_and_step(tmp_path: Path) -> None:
    cfg = load_config(
        TrainConfig,
        None,
        [
            override(
                entry(RecordCalls, out_dir=str(tmp_path), tag="first"),
                entry(NanInputs, rank=1, step=2),
                entry(RecordCalls, out_dir=str(tmp_path), tag="last"),
            )
        ],
    )
    built = build_callbacks(cfg.callbacks)
    assert [type(c) for c in built] == [RecordCalls, NanInputs, RecordCalls]
    assert [built[0].tag, built[2].tag] == ["first", "last"] and (built[1].rank, built[1].step) == (1, 2)

    class Plain(TrainerCallback):  # overrides nothing: every hook is a no-op
        pass

    hooks = CallbackList([*built, Plain()])
    for rank in (0, 1):
        hooks.on_rank_start(rank)
        for step in (1, 2):
            inputs = {"hist_rating": torch.ones(2, 3)}
            hooks.before_forward(inputs, rank, step)
            assert bool(torch.isnan(inputs["hist_rating"]).all()) == ((rank, step) == (1, 2))
    for rank in (0, 1):
        got = [json.loads(x) for x in (tmp_path / f"calls-rank{rank}.jsonl").read_text().splitlines()]
        assert [(c["tag"], c["hook"], c["rank"], c.get("step"), c.get("nan")) for c in got] == [
            ("first", "on_rank_start", rank, None, None),
            ("last", "on_rank_start", rank, None, None),
            ("first", "before_forward", rank, 1, False),
            ("last", "before_forward", rank, 1, False),
            ("first", "before_forward", rank, 2, False),
            ("last", "before_forward", rank, 2, rank == 1),  # the injector ran between the two
        ]
