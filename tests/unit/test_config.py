"""Config loading: YAML + dotted overrides -> typed dataclasses, with errors a user can act on."""

from __future__ import annotations

import pytest

from seller_dist.config import (
    ConfigError,
    PrepConfig,
    StreamConfig,
    TrainConfig,
    dump_yaml,
    from_dict,
    load_config,
)


def test_yaml_and_overrides_build_typed_dataclasses(tmp_path):
    p = tmp_path / "prep.yaml"
    p.write_text("source: yelp\nmax_history: 12\nstorage:\n  retries: 2\n")
    cfg = load_config(
        PrepConfig, p, ["max_history=7", "storage.endpoint_url=http://127.0.0.1:9", "output=s3://b/x"]
    )
    assert cfg.source == "yelp"
    assert cfg.max_history == 7
    assert cfg.storage.retries == 2
    assert cfg.storage.endpoint_url == "http://127.0.0.1:9"
    assert cfg.output == "s3://b/x"


def test_round_trip_through_yaml(tmp_path):
    cfg = from_dict(PrepConfig, {"source": "recbole", "inputs": {"dir": "/x"}})
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(PrepConfig, p) == cfg


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'max_histroy'; did you mean 'max_history'\?"):
        from_dict(PrepConfig, {"max_histroy": 3})


def test_unknown_nested_key_names_full_path():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'storage.retry'; did you mean 'storage.retries'\?"
    ):
        from_dict(PrepConfig, {}, ["storage.retry=3"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"max_history: expected an integer, got 'ten'"):
        from_dict(PrepConfig, {"max_history": "ten"})
    with pytest.raises(ConfigError, match=r"batch_size: expected an integer"):
        from_dict(StreamConfig, {}, ["batch_size=1.5"])


def test_literal_and_validate_messages():
    with pytest.raises(ConfigError, match=r"engine: 'spark' is not one of \['local', 'ray'\]"):
        from_dict(PrepConfig, {"engine": "spark"})
    with pytest.raises(ConfigError, match=r"source: 'kaggle' is not one of"):
        from_dict(PrepConfig, {"source": "kaggle"})
    with pytest.raises(ConfigError, match=r"ray_shuffle: 'memory' is not one of \['disk', 'object_store'\]"):
        from_dict(PrepConfig, {"ray_shuffle": "memory"})
    with pytest.raises(ConfigError, match=r"partition_max_events >= 1000"):
        from_dict(PrepConfig, {"partition_max_events": 999})
    with pytest.raises(ConfigError, match=r"max_error_rate must be in \[0, 1\), got 1.5"):
        from_dict(PrepConfig, {"max_error_rate": 1.5})


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'max_history' must look like key.subkey=value"):
        from_dict(PrepConfig, {}, ["max_history"])
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml does not exist"):
        load_config(PrepConfig, tmp_path / "nope.yaml")


# ------------------------------------------------------------ llm_layout node/hpz, deepcompile
def _train(*overrides: str):
    from seller_dist.config import TrainConfig

    return from_dict(TrainConfig, {}, list(overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["llm_layout=node", "llm_shard_size=3", "workers.num_workers=4"],
            "llm_shard_size=3 does not divide workers.num_workers=4: set it to the GPUs per node",
        ),
        (["llm_layout=zero3", "llm_shard_size=2"], "llm_shard_size=2 only applies to llm_layout node or hpz"),
        (["llm_layout=node", "llm_shard_size=-1"], "llm_shard_size must be >= 0"),
        (["llm_layout=hpz", "zero_offload_params=true"], "zero_offload_params=true is only supported with"),
        (["deepcompile=true"], "deepcompile=true needs workers.use_gpu=true: DeepCompile is CUDA-only"),
        (
            ["deepcompile=true", "workers.use_gpu=true", "llm_layout=replicated"],
            "deepcompile=true needs llm_layout=zero3 (got replicated)",
        ),
        (
            ["deepcompile=true", "workers.use_gpu=true", "llm_layout=node"],
            "deepcompile=true needs llm_layout=zero3",
        ),
    ],
)
def test_llm_layout_and_deepcompile_refusals_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        _train(*overrides).validate()
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def _settings(cfg, use_gpu: bool):
    from seller_dist.strategy_settings import StrategySettings

    return StrategySettings.from_train_config(cfg, use_gpu)


def test_node_and_hpz_layouts_validate_and_fill_the_deepspeed_config(monkeypatch):
    from seller_dist.strategy_settings import ds_config_file

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    node = _train("llm_layout=node", "llm_shard_size=2", "workers.num_workers=4", "data.batch_size=3")
    node.validate()
    settings = _settings(node, use_gpu=False)
    assert (settings.llm_layout, settings.llm_shard_size) == ("node", 2)
    ds = settings.deepspeed_config()
    assert "seller_dist" not in ds  # the layout travels in the settings, not in DeepSpeed's dict
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_clipping"] == 0.0
    assert "zero_hpz_partition_size" not in ds["zero_optimization"]
    # the JSON file is the one source: every bucket/persistence setting comes through
    for k, v in ds_config_file("zero3_cpu.json")["zero_optimization"].items():
        assert ds["zero_optimization"][k] == v, k
    hpz_cfg = _train("llm_layout=hpz", "llm_shard_size=2", "workers.num_workers=4")
    hpz = _settings(hpz_cfg, use_gpu=True).deepspeed_config()
    assert hpz["zero_optimization"]["zero_hpz_partition_size"] == 2 and hpz["bf16"] == {"enabled": True}
    assert (
        hpz["zero_optimization"]["sub_group_size"]
        == ds_config_file("zero3_gpu.json")["zero_optimization"]["sub_group_size"]
    )
    # llm_shard_size 0: the GPUs per node from the environment; one that does not divide is refused
    four = _train("llm_layout=node", "workers.num_workers=4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"^llm_shard_size=3 does not divide the 4 workers"):
        _settings(four, use_gpu=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _settings(four, use_gpu=False).llm_shard_size == 2


def test_deepspeed_config_matches_the_json_files_and_refuses_deepcompile_on_cpu():
    from seller_dist.strategy_settings import StrategySettings, ds_config_file

    cpu = _settings(_train("data.batch_size=5", "optim.grad_accum=2"), use_gpu=False).deepspeed_config()
    want = ds_config_file("zero3_cpu.json")
    want.pop("fp16")
    want.update(train_micro_batch_size_per_gpu=5, gradient_accumulation_steps=2, gradient_clipping=0.0)
    assert cpu == want  # bf16 off on CPU, as in the file
    gpu = _train("zero_offload_params=true", "workers.use_gpu=true")
    offload = _settings(gpu, use_gpu=True).deepspeed_config()
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    # settings made directly (tests, benchmarks) build from the same file
    assert StrategySettings(5, 2, use_gpu=False).deepspeed_config() == cpu
    with pytest.raises(ConfigError, match=r"^deepcompile=true needs workers.use_gpu=true: DeepCompile is"):
        StrategySettings(4, use_gpu=False, deepcompile=True)
    with pytest.raises(ConfigError, match=r"^deepcompile=true needs llm_layout=zero3 \(got replicated\)"):
        StrategySettings(4, use_gpu=True, llm_layout="replicated", deepcompile=True)


def test_ds_configs_ship_inside_the_package():
    from pathlib import Path

    import seller_dist.strategy_settings as settings

    names = sorted(p.name for p in settings.DS_CONFIG_DIR.glob("*.json"))
    assert names == ["zero3_cpu.json", "zero3_gpu.json", "zero3_offload.json"]
    assert settings.DS_CONFIG_DIR.is_relative_to(Path(settings.__file__).parent)
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"train/ds_configs/*.json"' in text


def test_float_keys_take_exponent_notation_without_a_dot():
    """YAML 1.1 reads `1e-5` as a string; a float key still gets the number, and text stays an error."""
    from seller_dist.train.driver import default_config_path

    cfg = load_config(TrainConfig, default_config_path(), ["optim.lr=1e-5", "optim.eps=2E-8"])
    assert (cfg.optim.lr, cfg.optim.eps) == (1e-5, 2e-8)
    with pytest.raises(ConfigError, match=r"^optim.lr: expected a number, got 'fast'$"):
        load_config(TrainConfig, default_config_path(), ["optim.lr=fast"])


def test_deepspeed_key_sets_deepspeed_settings_and_refuses_what_the_train_config_owns():
    from seller_dist.train.driver import default_config_path

    base = _settings(load_config(TrainConfig, default_config_path(), []), use_gpu=False).deepspeed_config()
    nested = load_config(
        TrainConfig, default_config_path(), ["deepspeed.zero_optimization.reduce_bucket_size=1000"]
    )
    dotted = load_config(
        TrainConfig, default_config_path(), ['deepspeed={"zero_optimization.reduce_bucket_size": 1000}']
    )
    for cfg in (nested, dotted):  # one key changes, the rest of the section stays the file's
        ds = _settings(cfg, use_gpu=False).deepspeed_config()
        assert ds["zero_optimization"] == {**base["zero_optimization"], "reduce_bucket_size": 1000}
    for key, owner in (("bf16.enabled=true", "precision"), ("gradient_accumulation_steps=4", "optim.grad_accum"),
                       ("zero_optimization.stage=2", "llm_layout")):  # fmt: skip
        with pytest.raises(
            ConfigError,
            match=rf"^deepspeed\.{key.split('=')[0]} is set by the train config: use {owner} instead$",
        ):
            load_config(TrainConfig, default_config_path(), [f"deepspeed.{key}"])


def test_train_and_eval_share_one_workers_config():
    from seller_dist.config import EvalConfig, WorkersConfig

    train, evaluation = from_dict(TrainConfig, {}), from_dict(EvalConfig, {})
    assert type(train.workers) is type(evaluation.workers) is WorkersConfig
    assert (train.workers.num_workers, evaluation.workers.num_workers) == (2, 1)  # each job's default
    with pytest.raises(ConfigError, match=r"^workers.num_workers must be >= 1, got 0$"):
        from_dict(EvalConfig, {}, ["workers.num_workers=0"])
    with pytest.raises(
        ConfigError, match=r"^workers.max_failures=2: the eval job does not restart lost workers"
    ):
        from_dict(EvalConfig, {}, ["workers.max_failures=2"])


def test_a_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"^callbacks\[0\]: missing required key 'class_path'$"):
        from_dict(TrainConfig, {"callbacks": [{"init_args": {}}]})
