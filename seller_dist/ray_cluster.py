"""Connect to the Ray cluster a job runs on: the configured address, else RAY_ADDRESS (set inside
`ray job submit`), else a local Ray started here on 127.0.0.1 with the dashboard off (its job API
runs code) and token auth on. Ray reads its environment when it is imported, so the seller-dist CLI
and tests/__init__.py call `prepare_ray_environment()` before anything imports ray (launch.sh exports
the same variables), and `init_ray` refuses a local Ray that is not on loopback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# read when ray is IMPORTED: without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 a local Ray binds the host's
# external interface (GCS on [::], agents on the host's address); `ray.init` defaults to token auth,
# `ray start` does not
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # with _node_ip_address: every socket on 127.0.0.1
    "RAY_AUTH_MODE": "token",  # an explicit RAY_AUTH_MODE=disabled of yours is kept
}


def prepare_ray_environment() -> None:
    """Set RAY_ENVIRONMENT's defaults; call before the first `import ray` of the process."""
    late = "ray" in sys.modules and any(k not in os.environ for k in RAY_ENVIRONMENT)
    for k, v in RAY_ENVIRONMENT.items():
        os.environ.setdefault(k, v)
    if late:
        log.warning(
            "ray was imported before prepare_ray_environment(): a local Ray may bind external addresses"
        )


def init_ray(address: str | None, num_cpus: int, **init_kwargs) -> None:
    prepare_ray_environment()
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **init_kwargs)
        return
    ray.init(num_cpus=max(2, num_cpus), include_dashboard=False, _node_ip_address="127.0.0.1", **init_kwargs)
    host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    if host != "127.0.0.1":
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray bound {host}, not 127.0.0.1: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 must be set "
            "before ray is imported (seller_dist.ray_cluster.prepare_ray_environment(); the seller-dist "
            "CLI and launch.sh do it)"
        )
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if token.is_file():
        token.chmod(0o600)  # Ray creates a missing one world-readable
