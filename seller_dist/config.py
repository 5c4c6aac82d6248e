"""All seller-dist configs as typed dataclasses (data prep, stream, model, ...).

Load with `seller_dist.config_loader.load_config(PrepConfig, "prep.yaml", ["output=s3://b/x"])`.
Each `validate()` raises `ConfigError` with the key and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from seller_dist.config_loader import ConfigError

SOURCES = ("synthetic", "amazon2023", "yelp", "recbole", "xrec", "events")


@dataclass
class StorageConfig:
    """Object-store access. Credentials never live here: they come from the environment
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) or the cloud role."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000; default: $AWS_ENDPOINT_URL
    region: str | None = None
    retries: int = 5
    retry_backoff_s: float = 0.2


@dataclass
class SyntheticSourceConfig:
    num_users: int = 400
    num_items: int = 300
    num_categories: int = 12
    num_brands: int = 30
    events_per_user_min: int = 8
    events_per_user_max: int = 30
    drift: float = 0.3  # chance that a user's taste moves to a new category between sessions
    seed: int = 0

    def validate(self) -> None:
        if self.num_users < 1 or self.num_items < 2:
            raise ConfigError("source_options: num_users must be >= 1 and num_items >= 2")
        if not 2 <= self.events_per_user_min <= self.events_per_user_max:
            raise ConfigError(
                "source_options: need 2 <= events_per_user_min <= events_per_user_max "
                f"(got {self.events_per_user_min}, {self.events_per_user_max})"
            )
        if not 0.0 <= self.drift <= 1.0:
            raise ConfigError(f"source_options.drift must be in [0, 1], got {self.drift}")


@dataclass
class EventsColumnsConfig:
    """Column mapping for generic event logs: names in YOUR file for each field we need."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    action: str | None = "action"
    rating: str | None = None
    text: str | None = None  # review / explanation text if the log has one


@dataclass
class PrepConfig:
    """`seller-dist prep`: raw logs -> validated WebDataset shards + item catalog + manifest."""

    source: str = "synthetic"
    inputs: dict[str, str] = field(default_factory=dict)  # source-specific paths/URLs (see docs/data.md)
    source_options: dict[str, Any] = field(default_factory=dict)
    events_columns: EventsColumnsConfig = field(default_factory=EventsColumnsConfig)
    output: str = "outputs/data/synthetic"  # local path, s3://bucket/prefix, gs://...
    max_history: int = 20
    min_history: int = 1
    examples_per_user: int = 0  # 0 = every event with enough history becomes a training example
    shard_max_records: int = 2000
    shard_max_bytes: int = 64 * 1024 * 1024
    max_error_rate: float = 0.01  # fraction of bad input records tolerated before the run fails
    bad_record_samples: int = 20
    embed_item_text: bool = False
    embed_batch_size: int = 64
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # for engine=ray; default: start a local Ray on 127.0.0.1
    overwrite: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"source: '{self.source}' is not one of {list(SOURCES)}")
        if self.max_history < 1:
            raise ConfigError(f"max_history must be >= 1, got {self.max_history}")
        if not 1 <= self.min_history <= self.max_history:
            raise ConfigError(f"min_history must be in [1, max_history], got {self.min_history}")
        if self.shard_max_records < 1 or self.shard_max_bytes < 1024:
            raise ConfigError("shard_max_records must be >= 1 and shard_max_bytes >= 1024")
        if not 0.0 <= self.max_error_rate < 1.0:
            raise ConfigError(f"max_error_rate must be in [0, 1), got {self.max_error_rate}")
        if not self.output:
            raise ConfigError("output: give a local path or an s3:// / gs:// URL for the shards")


@dataclass
class StreamConfig:
    """How training/eval ranks read shards."""

    manifest: str = "outputs/data/synthetic"  # dataset root URL (holds manifest.json)
    split: str = "train"
    batch_size: int = 8
    shuffle_buffer: int = 256
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes per rank
    verify_checksums: bool = True
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shuffle_buffer < 0 or self.num_workers < 0:
            raise ConfigError("shuffle_buffer and num_workers must be >= 0")
