"""`seller-dist train` with a bad config fails in the driver, before Ray or any worker starts, with
the preflight's message (what to change). Fast: no Ray, no DeepSpeed."""

from __future__ import annotations

import pytest

from seller_dist import cli
from seller_dist.train import driver
from tests.conftest import S3_ENV, free_port, make_dataset
from tests.train_helpers import TRAIN_DEMO


@pytest.fixture
def no_ray(monkeypatch):
    """Any attempt to start Ray (and so workers) fails the test."""

    def forbidden(cfg):
        raise AssertionError("Ray was started for a config that preflight should have rejected")

    monkeypatch.setattr(driver, "init_ray", forbidden)


@pytest.fixture
def good(tmp_path, tiny_llm_dir) -> list[str]:
    data = str(tmp_path / "data")
    make_dataset(data, n_records=8, n_shards=2)
    return [
        "--set", f"data.manifest={data}",
        "--set", f"model.llm_path={tiny_llm_dir}",
        "--set", f"storage_path={tmp_path / 'runs'}",
    ]  # fmt: skip


def train_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["train", "--config", str(TRAIN_DEMO), *args])
    return code, capsys.readouterr().err


def test_unknown_key(no_ray, good, capsys):
    code, err = train_cli(capsys, *good, "--set", "optim.lrr=0.1")
    assert code == 2
    assert "seller-dist train: error: unknown config key 'optim.lrr'; did you mean 'optim.lr'?" in err


def test_ep_size_not_dividing_experts(no_ray, good, capsys):
    code, err = train_cli(capsys, *good, "--set", "model.ep_size=3")
    assert code == 2
    assert (
        "seller-dist train: error: model.ep_size=3 does not divide model.num_experts=4: choose ep_size in [1, 2, 4]"
        in err
    )


def test_missing_manifest(no_ray, good, tmp_path, capsys):
    code, err = train_cli(capsys, *good, "--set", f"data.manifest={tmp_path / 'nowhere'}")
    assert code == 2
    assert (
        f"seller-dist train: error: data.manifest: no manifest at {tmp_path / 'nowhere'}/manifest.json: run seller-dist prep"
        in err
    )


def test_unreachable_storage(no_ray, good, monkeypatch, capsys):
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, err = train_cli(
        capsys, *good, "--set", "storage_path=s3://runs-bucket/x", "--set", f"storage.endpoint_url={endpoint}"
    )
    assert code == 2
    assert "seller-dist train: error: storage_path: cannot write to s3://runs-bucket/x" in err
    assert f"check the endpoint ({endpoint}; set storage.endpoint_url or AWS_ENDPOINT_URL)" in err


def test_callback_that_does_not_import(no_ray, good, capsys):
    code, err = train_cli(capsys, *good, "--set", "callbacks=[{class_path: tests.no_such_module:Hook}]")
    assert code == 2
    assert (
        "seller-dist train: error: callbacks[0].class_path: cannot import module 'tests.no_such_module' "
        "(ModuleNotFoundError: No module named 'tests.no_such_module')"
    ) in err


def test_good_config_reaches_ray(no_ray, good, capsys):
    """The same inputs without the mistake pass preflight and go on to start Ray (stopped here)."""
    with pytest.raises(AssertionError, match="Ray was started"):
        cli.main(["train", "--config", str(TRAIN_DEMO), *good])
