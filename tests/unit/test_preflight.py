"""Config errors fail in the driver before any worker starts, with a message that says what to change."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch

from seller_dist import storage
from seller_dist.config import ConfigError, TrainConfig, from_dict, load_config
from seller_dist.train import checkpoint as ck
from seller_dist.train.preflight import preflight
from tests.conftest import free_port, make_dataset


@pytest.fixture
def dataset(tmp_path) -> str:
    root = str(tmp_path / "data")
    make_dataset(root, n_records=8, n_shards=2)
    return root


def train_cfg(dataset: str, llm: str, storage_path: str, *overrides: str) -> TrainConfig:
    base = {
        "run_name": "r1",
        "storage_path": storage_path,
        "data": {"manifest": dataset},
        "model": {"llm_path": llm, "num_experts": 4, "ep_size": 2},
        "workers": {"num_workers": 2},
    }
    return from_dict(TrainConfig, base, list(overrides))


def test_valid_config_passes_and_reports_manifest_hash(dataset, tiny_llm_dir, tmp_path):
    res = preflight(train_cfg(dataset, tiny_llm_dir, str(tmp_path / "runs")))
    raw = Path(dataset, "manifest.json").read_bytes()
    assert res.manifest_sha256 == hashlib.sha256(raw).hexdigest()
    assert res.resume_from is None and res.checkpoints_root == f"{tmp_path}/runs/r1/checkpoints"
    assert list(Path(tmp_path, "runs", "r1").iterdir()) == []  # the probe object was deleted


def test_unknown_key_names_it_and_suggests_the_right_one(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text("run_name: x\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'; did you mean 'optim.lr'\?"):
        load_config(TrainConfig, p)
    with pytest.raises(
        ConfigError, match=r"unknown config key 'workers.num_worker'; did you mean 'workers.num_workers'"
    ):
        load_config(TrainConfig, None, ["workers.num_worker=3"])


def test_ep_size_must_divide_experts_and_workers(dataset, tiny_llm_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        train_cfg(dataset, tiny_llm_dir, str(tmp_path), "model.ep_size=3")
    assert str(e.value) == "model.ep_size=3 does not divide model.num_experts=4: choose ep_size in [1, 2, 4]"
    with pytest.raises(ConfigError) as e:
        train_cfg(dataset, tiny_llm_dir, str(tmp_path), "model.ep_size=4", "workers.num_workers=2")
    assert str(e.value) == (
        "model.ep_size=4 does not divide workers.num_workers=2: choose ep_size in [1, 2] "
        "or change workers.num_workers to a multiple of ep_size"
    )
    cfg = train_cfg(dataset, tiny_llm_dir, str(tmp_path))
    cfg.workers.num_workers = 3  # changed after loading: preflight re-validates the whole tree
    with pytest.raises(ConfigError, match=r"model.ep_size=2 does not divide workers.num_workers=3"):
        preflight(cfg)


def test_missing_manifest_says_run_prep(tiny_llm_dir, tmp_path):
    cfg = train_cfg(str(tmp_path / "nodata"), tiny_llm_dir, str(tmp_path / "runs"))
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert str(e.value).startswith(
        f"data.manifest: no manifest at {tmp_path}/nodata/manifest.json: run seller-dist prep"
    )
    cfg = train_cfg(str(tmp_path / "nodata"), tiny_llm_dir, str(tmp_path / "runs"), "data.split=valid")
    cfg.data.manifest = str(tmp_path / "data-missing-split")
    make_dataset(cfg.data.manifest, n_records=4, n_shards=1)
    with pytest.raises(ConfigError, match=r"data.split: 'valid' is not in .* \(splits: \['train'\]\)"):
        preflight(cfg)


def test_llm_path_must_hold_a_checkpoint(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"model.llm_path is empty: give a local or s3://"):
        preflight(train_cfg(dataset, "", str(tmp_path)))
    with pytest.raises(ConfigError, match=rf"model.llm_path={tmp_path}/nollm: no such local folder"):
        preflight(train_cfg(dataset, str(tmp_path / "nollm"), str(tmp_path)))
    with pytest.raises(ConfigError, match=r"Qwen/Qwen2.5-7B: no local folder .* does not download from the"):
        preflight(train_cfg(dataset, "Qwen/Qwen2.5-7B", str(tmp_path)))  # a hub id, before any worker starts


def test_unwritable_local_storage_path(dataset, tiny_llm_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(
        ConfigError, match=rf"storage_path: cannot write to {blocker}/runs .*check that the path"
    ):
        preflight(train_cfg(dataset, tiny_llm_dir, str(blocker / "runs")))


def test_unreachable_s3_storage_fails_fast_naming_url_and_endpoint(dataset, tiny_llm_dir, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        preflight(train_cfg(dataset, tiny_llm_dir, "s3://ckpts/runs"))
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert msg.startswith(
        "storage_path: cannot write to s3://ckpts/runs (probe s3://ckpts/runs/r1/.preflight-"
    )
    assert (
        f"check the endpoint (http://127.0.0.1:{port}; set storage.endpoint_url or AWS_ENDPOINT_URL)" in msg
    )
    assert "credentials" in msg


@pytest.mark.slow
def test_s3_dataset_and_storage_with_resume_and_corrupt_checkpoint(s3_bucket, tiny_llm_dir):
    data = f"{s3_bucket}/data"
    make_dataset(data, n_records=4, n_shards=1)
    cfg = train_cfg(data, tiny_llm_dir, f"{s3_bucket}/runs")
    res = preflight(cfg)
    assert res.resume_from is None
    assert res.manifest_sha256 == hashlib.sha256(storage.read_bytes(f"{data}/manifest.json")).hexdigest()
    w = ck.CheckpointWriter(res.checkpoints_root, 12)
    w.save_tensors(ck.DENSE_FILE, {"slots": torch.ones(3)})
    w.upload()
    ck.commit(f"{res.checkpoints_root}/step-00000012", 1)
    res = preflight(cfg)
    assert (res.resume_from, res.resume_step) == (f"{s3_bucket}/runs/r1/checkpoints/step-00000012", 12)
    storage.write_bytes(f"{res.resume_from}/model.safetensors", b"truncated")
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert str(e.value).startswith(
        f"checkpoint {res.resume_from} is corrupt: file model.safetensors sha256 mismatch: delete that step folder"
    )
    with pytest.raises(
        ConfigError, match=rf"no manifest at {s3_bucket}/nodata/manifest.json: run seller-dist prep"
    ):
        preflight(train_cfg(f"{s3_bucket}/nodata", tiny_llm_dir, f"{s3_bucket}/runs"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run_name=a/b", "run_name: 'a/b' must be a non-empty name without '/'"),
        ("precision=bf16", "precision=bf16 needs workers.use_gpu=true (CPU runs train in fp32): use auto"),
        (
            "model.adapter=none",
            "model.adapter=none has nothing to train: evaluate it with `seller-dist eval`",
        ),
        ("optim.betas=[0.9, 1.5]", "optim.betas must be two numbers in [0, 1), got [0.9, 1.5]"),
        ("optim.grad_accum=0", "optim.grad_accum must be >= 1, got 0"),
        ("checkpoint.keep=0", "checkpoint.keep must be >= 1, got 0"),
        ("workers.num_workers=0", "workers.num_workers must be >= 1, got 0"),
        ("logging.wandb=cloud", "logging.wandb: 'cloud' is not one of ['offline', 'online', 'disabled']"),
    ],
)
def test_train_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {}, [override])
    assert str(e.value) == message


def test_llm_layout_options_that_cannot_work_together_are_refused(dataset, tiny_llm_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        train_cfg(dataset, tiny_llm_dir, str(tmp_path), "compile_llm=true")
    assert str(e.value).startswith("compile_llm=true needs llm_layout=replicated: under ZeRO-3")
    with pytest.raises(ConfigError) as e:
        train_cfg(dataset, tiny_llm_dir, str(tmp_path), "llm_layout=replicated", "zero_offload_params=true")
    assert str(e.value).startswith("zero_offload_params=true offloads ZeRO-3 partitions, but llm_layout=")
    with pytest.raises(
        ConfigError, match=r"llm_layout: 'sharded' is not one of \['zero3', 'replicated', 'node', 'hpz'\]"
    ):
        train_cfg(dataset, tiny_llm_dir, str(tmp_path), "llm_layout=sharded")
    cfg = train_cfg(dataset, tiny_llm_dir, str(tmp_path), "llm_layout=replicated", "compile_llm=true")
    assert (cfg.llm_layout, cfg.compile_llm) == ("replicated", True)
