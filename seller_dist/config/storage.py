"""Object-store access settings, shared by every job's config (`storage:`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StorageConfig:
    """Object-store access. Credentials never live here: they come from the environment
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) or the cloud role."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000; default: $AWS_ENDPOINT_URL
    region: str | None = None
    retries: int = 5
    retry_backoff_s: float = 0.2
