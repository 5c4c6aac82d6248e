"""Connect to the Ray cluster a job runs on: the configured address, else RAY_ADDRESS (set inside
`ray job submit`), else a local Ray started here on 127.0.0.1 with the dashboard off (its job API
runs code). Used by every Ray driver (training, evaluation, benchmarks)."""

from __future__ import annotations

import os


def init_ray(address: str | None, num_cpus: int) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    ray.init(num_cpus=max(2, num_cpus), include_dashboard=False, _node_ip_address="127.0.0.1")
