"""`seller-dist prep`'s config: the source and its options, the split, the shards and both engines
(docs/data.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from seller_dist.config.storage import StorageConfig
from seller_dist.errors import ConfigError

SOURCES = ("synthetic", "amazon2023", "yelp", "recbole", "xrec", "events")


def _dataset_root(url: str) -> str:
    url = url.strip().rstrip("/")
    return url[: -len("/manifest.json")] if url.endswith("/manifest.json") else url


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
    # an earlier prepared dataset (root URL): keep its item and action indices and append new items
    # after them, so a model trained on it can warm-start here (docs/data.md "Lineage")
    vocab_from: str | None = None
    max_history: int = 20
    min_history: int = 1
    examples_per_user: int = 0  # 0 = every event with enough history becomes a training example
    # keep only this many users (0 = all), with every example of theirs (train, valid, test): the users
    # with the smallest hash of (max_users_seed, user id), the same on both engines and on every rerun
    # (docs/data.md "Subsampling users"); not for the synthetic source (source_options.num_users)
    max_users: int = 0
    max_users_seed: int = 0
    # How examples are split (docs/data.md "Splits"): "time" = per user, last example test, previous
    # valid, rest train; "source" = the split the data comes with: xrec's trn/val/tst.pkl, or, for
    # amazon2023/yelp/events, `split_column` (a field holding train/valid/test) or `split_cutoffs`.
    split: Literal["time", "source"] = "time"
    split_column: str | None = None  # split=source: the input field/column that names each event's split
    # split=source: [VALID_FROM, TEST_FROM], epoch seconds (ms accepted) or ISO-8601 dates/times (UTC):
    # events before VALID_FROM are train targets, before TEST_FROM valid, the rest test
    split_cutoffs: list[int | str] | None = None
    shard_max_records: int = 2000
    shard_max_bytes: int = 64 * 1024 * 1024
    max_error_rate: float = 0.01  # fraction of bad input records tolerated before the run fails
    # input files (names, URLs or globs) accepted as damaged: a file that cannot be read to its end
    # (truncated or corrupt compressed stream, unreadable Parquet row group) fails the run unless it
    # is listed here; then what was lost is recorded in the manifest (docs/data.md "Damaged inputs")
    allow_damaged_inputs: list[str] = field(default_factory=list)
    bad_record_samples: int = 20
    embed_item_text: bool = False
    embed_batch_size: int = 64
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # for engine=ray; default: start a local Ray on 127.0.0.1
    # engine=ray's shuffle of the events to their user's partition: "disk" (Ray Data's disk-based
    # shuffle: a map task writes one file to its node's temp folder, the driver holds one handle per
    # map task) or "object_store" (Ray Data's default: a shard per map task and partition, and shards
    # under Ray's 100 KB inline limit are held by the driver, so with many partitions it grows with the log)
    ray_shuffle: Literal["disk", "object_store"] = "disk"
    # One read task parses about this many bytes of a file (a byte range of JSONL/CSV/TSV/atomic
    # files, a run of Parquet row groups; a .gz file is always one task). 0 = one task per file.
    read_part_bytes: int = 16 * 1024 * 1024
    # Local engine: events are spilled to this many user-hash partitions on local disk and cut one
    # partition at a time; a partition over partition_max_events is split again (memory bound).
    spill_partitions: int = 256
    # The memory bound of both engines. engine=ray: max(8 per CPU, events / this) partitions, no other
    # cap; a parse block, a shuffle map task's input and a partition hold about this many events at most
    partition_max_events: int = 250_000
    spill_dir: str | None = None  # local folder for the spill (default: the system temp folder)
    overwrite: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"source: '{self.source}' is not one of {list(SOURCES)}")
        if self.max_history < 1:
            raise ConfigError(f"max_history must be >= 1, got {self.max_history}")
        if not 1 <= self.min_history <= self.max_history:
            raise ConfigError(f"min_history must be in [1, max_history], got {self.min_history}")
        if self.max_users < 0:
            raise ConfigError(f"max_users must be >= 0 (0 = every user), got {self.max_users}")
        if self.max_users and self.source == "synthetic":
            raise ConfigError(
                "max_users: the synthetic source generates its users; set source_options.num_users instead"
            )
        if self.shard_max_records < 1 or self.shard_max_bytes < 1024:
            raise ConfigError("shard_max_records must be >= 1 and shard_max_bytes >= 1024")
        if not 0.0 <= self.max_error_rate < 1.0:
            raise ConfigError(f"max_error_rate must be in [0, 1), got {self.max_error_rate}")
        if not self.output:
            raise ConfigError("output: give a local path or an s3:// / gs:// URL for the shards")
        if self.vocab_from is not None:
            if not self.vocab_from.strip():
                raise ConfigError(
                    "vocab_from is empty: give the root URL of an earlier prepared dataset, or leave it unset"
                )
            if _dataset_root(self.vocab_from) == _dataset_root(self.output):
                raise ConfigError(
                    f"vocab_from: {self.vocab_from} is this run's output: give the EARLIER dataset "
                    "(prep writes the new window to a new output)"
                )
        if self.read_part_bytes < 0:
            raise ConfigError(
                f"read_part_bytes must be >= 0 (0 = one read task per file), got {self.read_part_bytes}"
            )
        if self.spill_partitions < 1 or self.partition_max_events < 1000:
            raise ConfigError("spill_partitions must be >= 1 and partition_max_events >= 1000")
        self._validate_split()

    # sources that publish their own split / that can read a split column from their records
    SOURCES_WITH_SPLIT = ("xrec",)
    SOURCES_WITH_SPLIT_COLUMN = ("amazon2023", "yelp", "events")

    def _validate_split(self) -> None:
        """split=source needs a split to read: the source's own, a split_column or split_cutoffs."""
        if self.split == "time":
            for key in ("split_column", "split_cutoffs"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{key} is set but split is 'time': set split: source to use it")
            return
        if self.split_column is not None and self.split_cutoffs is not None:
            raise ConfigError("split: source takes split_column OR split_cutoffs, not both: remove one")
        if self.source in self.SOURCES_WITH_SPLIT:
            if self.split_column is not None or self.split_cutoffs is not None:
                raise ConfigError(
                    f"split: source: {self.source} publishes its own split (trn/val/tst.pkl); "
                    "remove split_column / split_cutoffs"
                )
            return
        if self.split_column is not None:
            if not self.split_column.strip():
                raise ConfigError("split_column is empty: name the column that holds train/valid/test")
            if self.source not in self.SOURCES_WITH_SPLIT_COLUMN:
                raise ConfigError(
                    f"split_column: source {self.source} has no split column; use split_cutoffs: "
                    "[VALID_FROM, TEST_FROM] or split: time"
                )
            return
        if self.split_cutoffs is None:
            column = self.source in self.SOURCES_WITH_SPLIT_COLUMN
            hint = "split_column (a field holding train/valid/test) or " if column else ""
            raise ConfigError(
                f"split: source: source {self.source} publishes no split; set {hint}split_cutoffs: "
                "[VALID_FROM, TEST_FROM], or use split: time"
            )
        self.split_cutoff_seconds()

    def split_cutoff_seconds(self) -> tuple[int, int] | None:
        """split_cutoffs as (valid_from, test_from) epoch seconds; None without cutoffs."""
        if self.split_cutoffs is None:
            return None
        if len(self.split_cutoffs) != 2:
            raise ConfigError(
                f"split_cutoffs: expected [VALID_FROM, TEST_FROM] (two timestamps), got {self.split_cutoffs}"
            )
        out = [self._cutoff_seconds(v, f"split_cutoffs[{i}]") for i, v in enumerate(self.split_cutoffs)]
        if out[0] > out[1]:
            raise ConfigError(
                f"split_cutoffs: VALID_FROM {self.split_cutoffs[0]!r} is after TEST_FROM "
                f"{self.split_cutoffs[1]!r}"
            )
        return out[0], out[1]

    @staticmethod
    def _cutoff_seconds(value: int | str, key: str) -> int:
        """Epoch seconds (numbers above 1e11 are ms) or an ISO-8601 date / date-time (no zone = UTC)."""
        import datetime as dt

        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, int):
            if value < 0:
                raise ConfigError(f"{key}: {value} is negative; give epoch seconds or an ISO-8601 date")
            return value // 1000 if value > 100_000_000_000 else value
        try:
            t = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                f"{key}: {value!r} is not epoch seconds or an ISO-8601 date ('2021-08-11', "
                "'2021-08-11T01:16:54Z')"
            ) from None
        return int((t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp())
