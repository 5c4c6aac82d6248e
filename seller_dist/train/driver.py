"""`seller-dist train`: preflight, then a Ray Train TorchTrainer running seller_dist.train.worker.
Every check the config alone can fail (keys, ep_size, manifest, storage, a corrupt checkpoint, init_from
weights that do not fit) runs here in the driver, in seconds, before Ray is contacted, so a bad config
never costs a worker-group allocation (docs/training.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from seller_dist import storage
from seller_dist.config import TrainConfig, to_dict
from seller_dist.console import local_log_path, stage_console
from seller_dist.logs import stage_log
from seller_dist.train import checkpoint as ck
from seller_dist.train.preflight import PreflightResult, preflight

log = logging.getLogger(__name__)
stage = stage_log(__name__)  # the job's stage lines (seller_dist/logs.py)


def default_config_path() -> str:
    from importlib import resources

    return str(resources.files("seller_dist") / "configs" / "train_demo.yaml")


def init_ray(cfg: TrainConfig) -> None:
    from seller_dist.ray_cluster import init_ray as connect

    w = cfg.workers
    connect(w.ray_address, int(w.num_workers * w.cpus_per_worker + 0.999))


def ray_storage(cfg: TrainConfig) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: an explicit S3 filesystem when an endpoint is
    configured (pyarrow does not read AWS_ENDPOINT_URL everywhere), else Ray's own URL handling."""
    path = cfg.storage_path
    proto = storage.protocol_of(path)
    if proto == "file":
        local = path[len("file://") :] if path.startswith("file://") else path
        return os.path.abspath(local), None
    endpoint = storage.endpoint_url(cfg.storage)
    if proto in ("s3", "s3a") and endpoint:
        import pyarrow.fs

        scheme, _, host = endpoint.partition("://")
        fs = pyarrow.fs.S3FileSystem(
            endpoint_override=host or scheme,
            scheme=scheme if host else "https",
            region=cfg.storage.region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        return path.split("://", 1)[1], fs
    return path, None


def build_trainer(cfg: TrainConfig) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from seller_dist.train.worker import ray_train_loop

    w = cfg.workers
    resources: dict[str, float] = {"CPU": w.cpus_per_worker}
    if w.use_gpu:
        resources["GPU"] = w.gpus_per_worker
    storage_path, fs = ray_storage(cfg)
    return TorchTrainer(
        ray_train_loop,
        train_loop_config={"config": to_dict(cfg)},
        scaling_config=ScalingConfig(
            num_workers=w.num_workers, use_gpu=w.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=w.max_failures),
            worker_runtime_env={"env_vars": worker_env()},
        ),
    )


def worker_env() -> dict[str, str]:
    """Environment the workers need from the driver: the S3 endpoint (never credentials: Ray passes
    the job's environment through its runtime env; a cluster uses roles), wandb mode, the torch
    extensions folder."""
    keys = ("AWS_ENDPOINT_URL", "WANDB_MODE", "TORCH_EXTENSIONS_DIR")
    env = {k: os.environ[k] for k in keys if os.environ.get(k)}
    env.setdefault("OMP_NUM_THREADS", "1")
    # Ray Train's print patch sends each print() through its logger AND the stream: every worker
    # line reached the driver twice
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    return env


def absolutize_local_paths(cfg: TrainConfig) -> None:
    """Ray workers do not run in the driver's working directory: relative local paths in the config
    are made absolute here, against the directory `seller-dist train` was started in."""
    import dataclasses

    from seller_dist.storage import protocol_of

    def fix(url: str) -> str:
        return os.path.abspath(url) if url and protocol_of(url) == "file" else url

    cfg.data = dataclasses.replace(cfg.data, manifest=fix(cfg.data.manifest))
    cfg.model = dataclasses.replace(cfg.model, llm_path=fix(cfg.model.llm_path))
    cfg.logging = dataclasses.replace(cfg.logging, wandb_dir=fix(cfg.logging.wandb_dir))
    cfg.storage_path = fix(cfg.storage_path)
    if cfg.init_from:
        cfg.init_from = fix(cfg.init_from)


def log_path(cfg: TrainConfig) -> str:
    """Where a quiet console puts Ray's and DeepSpeed's output: the run folder when it is local."""
    local = storage.protocol_of(cfg.storage_path) == "file"
    folder = storage.join(cfg.storage_path, cfg.run_name) if local else cfg.storage_path
    return str(local_log_path(folder, "train.log" if local else f"{cfg.run_name}-train.log"))


@dataclass
class TrainResult:
    """What a training job leaves: its preflight, Ray's Result and the newest committed checkpoint."""

    preflight: PreflightResult
    result: Any
    checkpoint: ck.Checkpoint


def train(cfg: TrainConfig, quiet: bool = False) -> TrainResult:
    """Train to a checkpoint: preflight (raises ConfigError), fit, then find the newest committed
    checkpoint (a job that left none raises): what `seller-dist train`, the demo and the experiment
    run. `quiet`: after preflight, Ray's and DeepSpeed's own output goes to `log_path(cfg)`,
    not the console."""
    absolutize_local_paths(cfg)
    pre = preflight(cfg)
    if pre.resume_from:
        stage.info(f"[train] resuming run {cfg.run_name} from {pre.resume_from} (step {pre.resume_step})")
    else:
        stage.info(f"[train] new run {cfg.run_name}: checkpoints under {pre.checkpoints_root}")
        if pre.init_from:
            stage.info(f"[train] {pre.init_summary}")
            # a run's checkpoints folder may gain a newer step: workers load the one preflight checked
            cfg.init_from = pre.init_from["source"]
    with stage_console("train", log_path(cfg), quiet):
        init_ray(cfg)
        result = build_trainer(cfg).fit()
    latest = ck.latest_committed(pre.checkpoints_root, cfg.storage, verify=False)
    stage.info(f"[train] finished run {cfg.run_name}: newest checkpoint {latest.url if latest else None}")
    if latest is None:
        raise RuntimeError(f"training left no committed checkpoint under {pre.checkpoints_root}")
    return TrainResult(pre, result, latest)
