"""The Ray workers a job runs on (`workers:`): the train job's Ray Train workers and the eval job's
generating actors take the same keys."""

from __future__ import annotations

from dataclasses import dataclass

from seller_dist.errors import ConfigError


@dataclass
class WorkersConfig:
    """How many Ray workers, what each reserves and where Ray runs (Ray Train's ScalingConfig and
    FailureConfig for training)."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only with use_gpu
    # restarts of the whole worker group after a lost worker; -1 = unlimited. Training only: the
    # eval job refuses anything but 0
    max_failures: int = 0
    ray_address: str | None = None  # None: connect to RAY_ADDRESS or start a local Ray on 127.0.0.1

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"workers.num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"workers.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.use_gpu and self.gpus_per_worker <= 0:
            raise ConfigError(f"workers.gpus_per_worker must be > 0 with use_gpu, got {self.gpus_per_worker}")
        if self.max_failures < -1:
            raise ConfigError(f"workers.max_failures must be >= -1 (-1 = unlimited), got {self.max_failures}")
