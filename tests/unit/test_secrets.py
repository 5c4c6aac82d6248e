"""One list of secret / ordinary keys and credential-looking values, checked against
seller_dist.redact AND through both of its callers (training's wandb config in
seller_dist.train.metrics, the eval report's report.json and wandb config), so they cannot drift."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from seller_dist.config import LoggingConfig
from seller_dist.eval.report import write_report
from seller_dist.redact import REDACTED, is_secret_key, scrub
from seller_dist.train.metrics import MetricsLogger

SECRET_KEYS = [
    "password",
    "db_password",
    "passwd",
    "secret",
    "client_secret",
    "aws_secret_access_key",
    "AWS_SECRET_ACCESS_KEY",
    "secret_access_key",
    "aws_access_key_id",
    "token",
    "access_token",
    "hf_token",
    "auth_token",
    "session_token",
    "AWS_SESSION_TOKEN",
    "accessToken",
    "api_key",
    "apiKey",
    "apikey",
    "WANDB_API_KEY",
    "credentials",
    "gcp_credential",
    "private_key",
    "auth",
]
ORDINARY_KEYS = [
    "max_new_tokens",
    "num_soft_tokens",
    "max_prompt_tokens",
    "max_target_tokens",
    "token_count",
    "tokens_per_s",
    "tokenizer",
    "author",
    "key",
    "record_key",
    "endpoint_url",
    "access_mode",
    "lr",
]
# (value, scrubbed): credentials inside values are masked under any key, the rest is kept
VALUES = [
    ("s3://AKIDKEY:wJalrXUtnFEMI@bucket/prefix", f"s3://{REDACTED}@bucket/prefix"),
    ("https://user:pass@host:9000/path", f"https://{REDACTED}@host:9000/path"),
    ("AKIAABCDEFGHIJKLMNOP", REDACTED),
    ("key id ASIAABCDEFGHIJKLMNOP here", f"key id {REDACTED} here"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("user@example.com", "user@example.com"),
    ("plain", "plain"),
]
SECRET_VALUE = "hunter2-value"


def _config() -> dict[str, Any]:
    """Every case in one nested config, as a caller would log it."""
    return {
        "keys": {k: SECRET_VALUE for k in SECRET_KEYS + ORDINARY_KEYS},
        "values": {f"v{i}": v for i, (v, _) in enumerate(VALUES)},
        "in_a_list": [{"hf_token": SECRET_VALUE, "max_new_tokens": 32}, VALUES[0][0]],
        "unset_password": "",
        "unset_token": None,
    }


def _check(out: dict[str, Any]) -> None:
    for k in SECRET_KEYS:
        assert out["keys"][k] == REDACTED, k
    for k in ORDINARY_KEYS:
        assert out["keys"][k] == SECRET_VALUE, k
    for i, (_, want) in enumerate(VALUES):
        assert out["values"][f"v{i}"] == want
    assert out["in_a_list"] == [{"hf_token": REDACTED, "max_new_tokens": 32}, VALUES[0][1]]
    assert out["unset_password"] == "" and out["unset_token"] is None  # shows the field was unset


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys(key: str):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ORDINARY_KEYS)
def test_ordinary_keys(key: str):
    assert not is_secret_key(key)


def test_scrub_masks_every_case_and_leaves_the_input_alone():
    cfg = _config()
    _check(scrub(cfg))
    assert cfg == _config()
    assert scrub(("AKIAABCDEFGHIJKLMNOP", 1)) == (REDACTED, 1)


class _FakeWandb(types.ModuleType):
    """Records what wandb.init was given; enough of wandb for both callers."""

    def __init__(self, run_dir: str):
        super().__init__("wandb")
        self.configs: list[dict[str, Any]] = []
        self.run_dir = run_dir

    def Settings(self, **kw: Any) -> dict[str, Any]:  # noqa: N802 (wandb's name)
        return kw

    def Image(self, path: str) -> str:  # noqa: N802
        return path

    def init(self, config: dict[str, Any], **kw: Any) -> Any:
        self.configs.append(config)
        return types.SimpleNamespace(
            summary={}, log=lambda *a, **k: None, finish=lambda: None, dir=self.run_dir
        )


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path: Path) -> _FakeWandb:
    fake = _FakeWandb(str(tmp_path / "wandb"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_training_logger_config_goes_through_the_scrubber(fake_wandb: _FakeWandb, tmp_path: Path):
    cfg = LoggingConfig(wandb="offline", wandb_dir=str(tmp_path), wandb_project="p")
    MetricsLogger(cfg, "run", config=_config()).close()
    (logged,) = fake_wandb.configs
    _check(logged)


def test_eval_report_json_and_wandb_config_go_through_the_scrubber(fake_wandb: _FakeWandb, tmp_path: Path):
    config = {**_config(), "wandb": "offline", "wandb_dir": str(tmp_path / "wandb")}
    paths = write_report({"system": "s", "config": config}, str(tmp_path / "report"))
    on_disk = json.loads(Path(paths["json"]).read_text())["config"]
    (logged,) = fake_wandb.configs
    for out in (on_disk, logged):
        _check(out)
