"""Config loading: YAML + dotted overrides -> typed dataclasses, with errors a user can act on."""

from __future__ import annotations

import pytest

from seller_dist.config import PrepConfig, StreamConfig
from seller_dist.config_loader import ConfigError, dump_yaml, from_dict, load_config


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
    with pytest.raises(ConfigError, match=r"max_error_rate must be in \[0, 1\), got 1.5"):
        from_dict(PrepConfig, {"max_error_rate": 1.5})


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'max_history' must look like key.subkey=value"):
        from_dict(PrepConfig, {}, ["max_history"])
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml does not exist"):
        load_config(PrepConfig, tmp_path / "nope.yaml")
