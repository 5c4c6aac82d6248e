"""StrategySettings (seller_dist/strategy_settings.py): the DeepSpeed config built from them holds
DeepSpeed's keys only, each invalid combination is refused once, in __post_init__, with its one-line
message (the same line through the train config), and llm_shard_size 0 resolves to the ranks per node."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re

import pytest

from seller_dist.config import ConfigError, TrainConfig, from_dict
from seller_dist.strategy_settings import StrategySettings


@pytest.fixture(autouse=True)
def _no_rank_env(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def _deepspeed_keys() -> set[str]:
    """The top-level names DeepSpeed's config reads: its constants and the names its parser quotes."""
    import deepspeed.runtime.config as config
    import deepspeed.runtime.constants as constants
    import deepspeed.runtime.zero.config as zero

    known = {v for mod in (constants, zero) for v in vars(mod).values() if isinstance(v, str)}
    return known | set(re.findall(r"""['"]([a-z][a-z0-9_]*)['"]""", inspect.getsource(config)))


def _layouts():
    yield {"llm_layout": "zero3"}
    yield {"llm_layout": "replicated"}
    yield {"llm_layout": "node", "llm_shard_size": 2, "world_size": 4}
    yield {"llm_layout": "hpz", "llm_shard_size": 2, "world_size": 4}
    yield {"llm_layout": "hpz", "world_size": 8, "ranks_per_node": 4}


def test_the_built_deepspeed_config_holds_only_keys_deepspeed_knows(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.config import DeepSpeedConfig

    known = _deepspeed_keys()
    assert "seller_dist" not in known  # the old private key would fail this test
    overrides = ({}, {"zero_optimization": {"reduce_bucket_size": 1000}}, {"steps_per_print": 10})
    built = 0
    for gpu, offload, bf16, layout, threshold, extra in itertools.product(
        (False, True), (False, True), (False, True), _layouts(), (None, 0), overrides
    ):
        if offload and layout["llm_layout"] in ("node", "hpz"):
            continue  # the train config refuses it (zero_offload_params works with zero3 only)
        for deepcompile in (False, True) if gpu and layout["llm_layout"] == "zero3" else (False,):
            s = StrategySettings(
                4,
                2,
                bf16,
                offload,
                threshold,
                use_gpu=gpu,
                deepcompile=deepcompile,
                deepspeed=extra,
                **layout,
            )
            ds = s.deepspeed_config()
            assert set(ds) <= known, set(ds) - known
            DeepSpeedConfig(ds)  # DeepSpeed's own parser: each section refuses keys it does not know
            built += 1
    assert built > 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"llm_layout": "sharded"},
            "llm_layout: 'sharded' is not one of ['zero3', 'replicated', 'node', 'hpz']",
        ),
        (
            {"llm_layout": "node", "llm_shard_size": -1},
            "llm_shard_size must be >= 0 (0: GPUs per node), got -1",
        ),
        ({"llm_shard_size": 2}, "llm_shard_size=2 only applies to llm_layout node or hpz, not zero3"),
        (
            {"llm_layout": "replicated", "llm_shard_size": 2},
            "llm_shard_size=2 only applies to llm_layout node or hpz, not replicated",
        ),
        (
            {"llm_layout": "node", "llm_shard_size": 3, "world_size": 4},
            "llm_shard_size=3 does not divide workers.num_workers=4: set it to the GPUs per node",
        ),
        (
            {"llm_layout": "hpz", "world_size": 4, "ranks_per_node": 3},
            "llm_shard_size=3 does not divide the 4 workers: set train.llm_shard_size to the GPUs per node "
            "(every node must run the same number of workers)",
        ),
        (
            {"deepcompile": True, "use_gpu": True, "llm_layout": "replicated"},
            "deepcompile=true needs llm_layout=zero3 (got replicated): DeepCompile compiles the ZeRO-3 "
            "gathers; for replicated use compile_llm=true",
        ),
        (
            {"deepcompile": True, "use_gpu": True, "llm_layout": "node", "world_size": 2},
            "deepcompile=true needs llm_layout=zero3 (got node): DeepCompile compiles the ZeRO-3 "
            "gathers; for replicated use compile_llm=true",
        ),
        (
            {"deepcompile": True, "use_gpu": False},
            "deepcompile=true needs workers.use_gpu=true: DeepCompile is CUDA-only",
        ),
        (
            {"deepspeed": {"bf16": {"enabled": True}}},
            "deepspeed.bf16.enabled is set by the train config: use precision instead",
        ),
        (
            {"deepspeed": {"zero_optimization.stage": 2}},
            "deepspeed.zero_optimization.stage is set by the train config: use llm_layout instead",
        ),
        (
            {"deepspeed": {"compile": {"deepcompile": True}}},
            "deepspeed.compile.deepcompile is set by the train config: use deepcompile instead",
        ),
    ],
)
def test_each_invalid_combination_is_refused_once_in_one_line(kwargs, message):
    with pytest.raises(ConfigError) as e:
        StrategySettings(4, **{"use_gpu": False, **kwargs})
    assert str(e.value) == message


@pytest.mark.parametrize(
    "overrides",
    [
        ["llm_layout=zero3", "llm_shard_size=2"],
        ["llm_layout=node", "llm_shard_size=-1"],
        ["llm_layout=node", "llm_shard_size=3", "workers.num_workers=4"],
        ["deepcompile=true", "workers.use_gpu=true", "llm_layout=hpz"],
        ["deepcompile=true"],
        ["deepspeed.gradient_clipping=1.0"],
    ],
)
def test_the_train_config_refuses_with_the_settings_own_line(overrides, monkeypatch):
    """TrainConfig.validate states none of these rules itself: its refusal is the settings' line."""
    with pytest.raises(ConfigError) as from_config:
        from_dict(TrainConfig, {}, overrides)
    with monkeypatch.context() as m:  # the same config, loaded without the train config's checks
        m.setattr(TrainConfig, "validate", lambda self: None)
        raw = from_dict(TrainConfig, {}, overrides)
    with pytest.raises(ConfigError) as from_settings:
        StrategySettings.from_train_config(raw, raw.workers.use_gpu, raw.workers.num_workers)
    assert str(from_config.value) == str(from_settings.value)
    assert "\n" not in str(from_config.value)


def test_llm_shard_size_resolves_to_the_ranks_per_node_and_the_settings_stay_frozen(monkeypatch):
    node = StrategySettings(4, use_gpu=False, llm_layout="node", world_size=4, ranks_per_node=2)
    assert node.llm_shard_size == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    hpz = StrategySettings(4, use_gpu=True, llm_layout="hpz", world_size=8)  # from LOCAL_WORLD_SIZE
    assert (
        hpz.llm_shard_size == 4
        and hpz.deepspeed_config()["zero_optimization"]["zero_hpz_partition_size"] == 4
    )
    one_node = StrategySettings(4, use_gpu=True, llm_layout="hpz", world_size=4)  # one node: no secondary
    assert "zero_hpz_partition_size" not in one_node.deepspeed_config()["zero_optimization"]
    assert StrategySettings(4, use_gpu=False).llm_shard_size == 0  # zero3: the world, no group
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.llm_layout = "zero3"
    assert dataclasses.replace(node, micro_batch_size=8).llm_shard_size == 2
    # each build is a fresh dict: changing one never reaches the settings or the next
    built = node.deepspeed_config()
    built["zero_optimization"]["stage"] = 0
    assert node.deepspeed_config()["zero_optimization"]["stage"] == 3
