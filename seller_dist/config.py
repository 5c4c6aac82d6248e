"""All seller-dist configs as typed dataclasses (data prep, stream, model, ...).

Load with `seller_dist.config_loader.load_config(PrepConfig, "prep.yaml", ["output=s3://b/x"])`.
Each `validate()` raises `ConfigError` with the key and what to change.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from seller_dist.config_loader import ConfigError
from seller_dist.strategy_settings import LLM_LAYOUTS, LLMLayout, StrategySettings, dotted_items  # noqa: F401 (re-exported)

SOURCES = ("synthetic", "amazon2023", "yelp", "recbole", "xrec", "events")
# where the frozen LLM lives (train.llm_layout; docs/training.md): the one list, for the config
# loader (the Literal) and the strategy (seller_dist.train.strategy)


@dataclass
class StorageConfig:
    """Object-store access. Credentials never live here: they come from the environment
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) or the cloud role."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000; default: $AWS_ENDPOINT_URL
    region: str | None = None
    retries: int = 5
    retry_backoff_s: float = 0.2


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
        out = []
        for i, v in enumerate(self.split_cutoffs):
            out.append(self._cutoff_seconds(v, f"split_cutoffs[{i}]"))
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


@dataclass
class StreamConfig:
    """How training/eval ranks read shards."""

    manifest: str = "outputs/data/synthetic"  # dataset root URL (holds manifest.json)
    split: str = "train"
    batch_size: int = 8
    shuffle_buffer: int = 256
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes per rank
    prefetch_batches: int = 1  # batches collated ahead in a thread while the step runs (0 = off)
    verify_checksums: bool = True
    # > 0: cut each group of this many consecutive batches from its records sorted by text length
    # (less padding: 1.6x fewer padded tokens on the synthetic data, BENCHMARKS.md); 0 = off
    length_buckets: int = 0
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.length_buckets < 0:
            raise ConfigError(f"length_buckets must be >= 0 (0 = off), got {self.length_buckets}")
        if self.shuffle_buffer < 0 or self.num_workers < 0 or self.prefetch_batches < 0:
            raise ConfigError("shuffle_buffer, num_workers and prefetch_batches must be >= 0")


@dataclass
class ModelConfig:
    """SELLER model: encoders, fusion, adapter (MoE / dense / none) and the frozen LLM (docs/model.md)."""

    history_encoder: Literal["transformer", "gru", "bag"] = "transformer"
    prompt: Literal["seller", "ids"] = "seller"  # ids = PEPLER-like soft prompts from id embeddings only
    adapter: Literal["moe", "dense", "none"] = "moe"  # none = prompt text only, no soft tokens
    # events and the target item also read their titles through the frozen LLM's token embeddings
    # (mean over the title's tokens, a trainable projection in each encoder): the soft prompt can then
    # point at a title in the LLM's own space instead of learning each item id -> title mapping
    title_features: bool = True
    # with title_features: the last soft positions get the LLM embeddings of the supporting event's
    # title's tokens (times a learned per-position gain): the soft prompt spells that title in the
    # LLM's own input space, as a text profile would. "hard": the title of the event with the top
    # fusion weight, gradients reaching the attention straight through (a mixture of titles is no
    # title the LLM can copy); "soft": the attention-weighted mixture; "off": no pointer
    title_pointer: Literal["hard", "soft", "off"] = "soft"
    # the adapter writes soft positions 0..A-1 (A = num_soft_tokens - pointer_tokens), the pointed
    # title's first pointer_tokens tokens take the last positions ALONE (the adapter's output would blur
    # them), right-aligned: the title ends right before " Explanation:", as a text profile does
    pointer_tokens: int = 5
    # the adapter's output is multiplied by a learned per-soft-position gain that starts here: random
    # experts give vectors of norm ~7 where the LLM's token embeddings have norm ~1, which at 1.0
    # buries the title pointer and reads as noise to the frozen LLM
    adapter_gain_init: float = 0.1
    # fusion attention logits get a learned per-head bias for each item attribute an event shares with
    # the target (DIN-style target attention; order-free, so the bag baseline has it too)
    target_match_bias: bool = True
    # ... and a learned per-head bias for each event's recency rank (0 = the newest event). Only the
    # sequence-aware encoders use it: history_encoder=bag ignores it, a recency rank is an order
    recency_bias: bool = True
    # order of the history titles in the prompt TEXT: "time" (oldest first) or "sorted" (by token ids,
    # an order-free canonical order): an order-free baseline (history_encoder=bag) needs "sorted", or
    # the frozen LLM reads the order from the text
    history_text: Literal["time", "sorted"] = "time"
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    max_history: int = (
        50  # position table size: >= the dataset's max_history (later positions share the last row)
    )
    num_time_buckets: int = 32  # log2 time-gap buckets (0 = padding)
    num_soft_tokens: int = 8  # K soft-prompt vectors placed into the LLM input (pointer + adapter)
    num_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 128
    capacity_factor: float = 0.0  # 0 = dropless; else capacity = ceil(cf * tokens * top_k / experts)
    aux_loss_coef: float = 0.01
    ep_size: int = 1  # expert-parallel group size: each rank holds num_experts / ep_size experts
    llm_path: str = ""  # local dir or s3:// / gs:// URL of a Hugging Face causal LM checkpoint
    llm_cache_dir: str = ".cache/llm"  # where object-store checkpoints are downloaded
    llm_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # code shipped inside a checkpoint (config.json auto_map) runs only when this is true
    trust_remote_code: bool = False
    # pickled *.bin weights load only when this is true, and then with torch.load(weights_only=True)
    allow_pickle_weights: bool = False
    # "plain": the collator's own prompt text; "chat": that text as the user turn of the tokenizer's
    # chat template (instruct checkpoints), the explanation as the assistant turn
    prompt_format: Literal["plain", "chat"] = "plain"
    # text that leads the prompt, e.g. "Explain why the recommended item fits this user." (the fair
    # zero-shot of an instruct model asks for what it should write); "" = none
    prompt_instruction: str = ""

    @property
    def uses_pointer(self) -> bool:
        """The soft prompt holds a title pointer (a trained SELLER prompt with title features)."""
        return (
            self.title_features
            and self.title_pointer != "off"
            and self.prompt == "seller"
            and self.adapter != "none"
        )

    @property
    def adapter_tokens(self) -> int:
        """Soft positions the adapter writes (the others hold the title pointer)."""
        return self.num_soft_tokens - (self.pointer_tokens if self.uses_pointer else 0)

    def validate(self) -> None:
        for name in ("d_model", "num_layers", "num_heads", "num_soft_tokens", "num_experts", "expert_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"model.num_heads={self.num_heads} does not divide model.d_model={self.d_model}: "
                f"choose num_heads in {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}"
            )
        if self.uses_pointer and not 1 <= self.pointer_tokens < self.num_soft_tokens:
            raise ConfigError(
                f"model.pointer_tokens={self.pointer_tokens} must be in [1, model.num_soft_tokens="
                f"{self.num_soft_tokens}): the title pointer and the adapter each need soft positions "
                "(raise num_soft_tokens, or set model.title_pointer=off)"
            )
        if self.adapter_gain_init <= 0:
            raise ConfigError(f"model.adapter_gain_init must be > 0, got {self.adapter_gain_init}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.num_time_buckets < 2 or self.max_history < 1:
            raise ConfigError("model.num_time_buckets must be >= 2 and model.max_history >= 1")
        if self.top_k not in (1, 2):
            raise ConfigError(f"model.top_k must be 1 or 2, got {self.top_k}")
        if self.top_k > self.num_experts:
            raise ConfigError(f"model.top_k={self.top_k} exceeds model.num_experts={self.num_experts}")
        if self.capacity_factor < 0:
            raise ConfigError(
                f"model.capacity_factor must be >= 0 (0 = dropless), got {self.capacity_factor}"
            )
        if self.aux_loss_coef < 0:
            raise ConfigError(f"model.aux_loss_coef must be >= 0, got {self.aux_loss_coef}")
        if self.ep_size < 1 or self.num_experts % self.ep_size:
            divisors = [d for d in range(1, self.num_experts + 1) if self.num_experts % d == 0]
            raise ConfigError(
                f"model.ep_size={self.ep_size} does not divide model.num_experts={self.num_experts}: "
                f"choose ep_size in {divisors}"
            )
        if self.ep_size > 1 and self.adapter != "moe":
            raise ConfigError(f"model.ep_size={self.ep_size} needs model.adapter=moe (got '{self.adapter}')")


# ------------------------------------------------------------------------------------ training job
@dataclass
class OptimConfig:
    """AdamW for every trainable part (dense modules and experts), warmup + decay schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8  # AdamW's epsilon (a larger one damps the sign-like first steps of tiny gradients)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global L2 norm over dense + expert gradients; 0 = no clipping
    grad_accum: int = 1  # micro-batches per optimizer step

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.eps <= 0:
            raise ConfigError(f"optim.eps must be > 0, got {self.eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.grad_accum < 1:
            raise ConfigError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")


@dataclass
class CheckpointConfig:
    """Where and how often trainable state is checkpointed (docs/checkpoints.md)."""

    every_steps: int = 50  # 0 = only at the end
    keep: int = 3  # newest committed checkpoints kept; older ones are pruned
    at_end: bool = True
    # also keep the committed checkpoint with the lowest validation loss (needs eval.every_steps)
    keep_best: bool = False

    def validate(self) -> None:
        if self.every_steps < 0:
            raise ConfigError(
                f"checkpoint.every_steps must be >= 0 (0 = only at the end), got {self.every_steps}"
            )
        if self.keep < 1:
            raise ConfigError(f"checkpoint.keep must be >= 1, got {self.keep}")


@dataclass
class WorkersConfig:
    """Ray Train ScalingConfig + FailureConfig."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only with use_gpu
    max_failures: int = 0  # restarts of the whole worker group after a lost worker; -1 = unlimited
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


@dataclass
class LoggingConfig:
    """stdout + wandb + Ray reports. MFU is measured against `peak_tflops` per worker device."""

    every_steps: int = 10
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "seller-dist"
    wandb_dir: str = "outputs/wandb"
    peak_tflops: float = 989.0  # dense bf16 peak per device (H100 SXM); set your chip's number

    def validate(self) -> None:
        if self.every_steps < 1:
            raise ConfigError(f"logging.every_steps must be >= 1, got {self.every_steps}")
        if self.peak_tflops <= 0:
            raise ConfigError(f"logging.peak_tflops must be > 0, got {self.peak_tflops}")




@dataclass
class TrainEvalConfig:
    """Validation loss during training (seller_dist.train.validation): the same at any worker count."""

    every_steps: int = 0  # 0 = off; also measured at every checkpoint while on
    split: str = "valid"
    max_examples: int = 512  # the split's first N examples in shard order; 0 = all of them
    batch_size: int = 0  # 0 = data.batch_size

    def validate(self) -> None:
        if self.every_steps < 0:
            raise ConfigError(f"eval.every_steps must be >= 0 (0 = no validation), got {self.every_steps}")
        if self.max_examples < 0:
            raise ConfigError(
                f"eval.max_examples must be >= 0 (0 = the whole split), got {self.max_examples}"
            )
        if self.batch_size < 0:
            raise ConfigError(f"eval.batch_size must be >= 0 (0 = data.batch_size), got {self.batch_size}")


CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # "package.module:Class"


@dataclass
class CallbackConfig:
    """One trainer callback (seller_dist.train.callbacks): each rank builds `Class(**init_args)`."""

    class_path: str  # "package.module:Class", importable in the driver and on every worker
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """`seller-dist train`: one run = run_name under storage_path (checkpoints, metrics)."""

    run_name: str = "seller"
    storage_path: str = "outputs/runs"  # local path or s3://bucket/prefix (endpoint: storage.endpoint_url)
    # warm start: a committed checkpoint (…/step-N), a run's checkpoints folder (its newest) or an
    # export folder whose trainable weights a NEW run starts from (item rows mapped by item id);
    # a run_name that already has a committed checkpoint resumes from it and ignores this
    init_from: str | None = None
    max_steps: int = 100  # optimizer steps; every rank runs exactly this many
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    zero_offload_params: bool = False
    # zero3: the frozen LLM partitioned over all ranks (fits any size); node: partitioned inside each
    # node (llm_shard_size ranks), replicated across nodes: gathers never cross the NICs; hpz: ZeRO++
    # primary partition over all ranks + a node-local secondary copy; replicated: a whole bf16 copy
    # on every GPU, outside the ZeRO-3 engine (no gathers; needs N_llm * 2 bytes per GPU free)
    llm_layout: LLMLayout = "zero3"
    # ranks per node for llm_layout node/hpz; 0: LOCAL_WORLD_SIZE on the workers (GPUs per node)
    llm_shard_size: int = 0
    compile_llm: bool = False  # torch.compile each frozen decoder layer (needs llm_layout=replicated)
    # DeepSpeed DeepCompile of the ZeRO-3 engine (GPU, llm_layout=zero3); unmeasured
    deepcompile: bool = False
    # DeepSpeed settings over the ds_configs file, dotted keys, e.g.
    # {"zero_optimization.stage3_prefetch_bucket_size": 50000000}; keys the train config owns are refused
    deepspeed: dict[str, Any] = field(default_factory=dict)
    # hooks into every rank's loop (seller_dist.train.callbacks.TrainerCallback subclasses), in order
    callbacks: list[CallbackConfig] = field(default_factory=list)
    data: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name: '{self.run_name}' must be a non-empty name without '/'")
        if not self.storage_path:
            raise ConfigError("storage_path: give a local path or an s3:// URL for checkpoints")
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.init_from is not None and not self.init_from.strip():
            raise ConfigError(
                "init_from is empty: give a checkpoint or export URL to warm-start from, or leave it unset"
            )
        if self.precision == "bf16" and not self.workers.use_gpu:
            raise ConfigError("precision=bf16 needs workers.use_gpu=true (CPU runs train in fp32): use auto")
        ep, n = self.model.ep_size, self.workers.num_workers
        if n % ep:
            raise ConfigError(
                f"model.ep_size={ep} does not divide workers.num_workers={n}: choose ep_size in "
                f"{[d for d in range(1, n + 1) if n % d == 0 and self.model.num_experts % d == 0]} "
                "or change workers.num_workers to a multiple of ep_size"
            )
        if self.model.adapter == "none":
            raise ConfigError("model.adapter=none has nothing to train: evaluate it with `seller-dist eval`")
        if self.compile_llm and self.llm_layout != "replicated":
            raise ConfigError(
                "compile_llm=true needs llm_layout=replicated: under ZeRO-3, torch.compile traces the "
                "parameter gather hooks and ran 10x slower than eager (BENCHMARKS.md, GPU run 2)"
            )
        if self.zero_offload_params and self.llm_layout == "replicated":
            raise ConfigError(
                "zero_offload_params=true offloads ZeRO-3 partitions, but llm_layout=replicated keeps "
                "the frozen LLM out of ZeRO-3: use llm_layout=zero3 to offload it"
            )
        for i, cb in enumerate(self.callbacks):
            if not CLASS_PATH.fullmatch(cb.class_path):
                raise ConfigError(
                    f"callbacks[{i}].class_path: '{cb.class_path}' is not 'package.module:Class'"
                )
        # the strategy's own rules (llm_layout, llm_shard_size, deepcompile, the `deepspeed` keys) live
        # in StrategySettings. The ranks per node (llm_shard_size 0) are known on the workers only
        # (LOCAL_WORLD_SIZE), so this check takes the job as one node: it checks a given llm_shard_size

        n = self.workers.num_workers
        StrategySettings.from_train_config(self, self.workers.use_gpu, world_size=n, ranks_per_node=n)
        if self.zero_offload_params and self.llm_layout in ("node", "hpz"):
            raise ConfigError(
                f"zero_offload_params=true is only supported with llm_layout=zero3, not {self.llm_layout}"
            )
        if self.checkpoint.keep_best and not self.eval.every_steps:
            raise ConfigError(
                "checkpoint.keep_best=true needs a validation loss: set eval.every_steps (e.g. to "
                "checkpoint.every_steps)"
            )


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class TextMetricsConfig:
    """Text-quality metrics (docs/evaluation.md): BLEU/ROUGE/BERTScore/USR/DIV/FMR/FCR."""

    bertscore: bool = True
    bertscore_layer: int = -1  # hidden-state index of all-MiniLM-L6-v2 (-1 = last of its 6 layers)
    max_length: int = 128  # tokens per text for BERTScore (longer texts are truncated)
    batch_size: int = 64
    bootstrap_samples: int = 200  # resamples for the std of corpus-level metrics (BLEU, USR, FCR, DIV)
    bootstrap_seed: int = 0

    def validate(self) -> None:
        if not -7 <= self.bertscore_layer <= 6:
            raise ConfigError(
                f"eval.text.bertscore_layer must be in [-7, 6] (all-MiniLM-L6-v2 has 6 layers + embeddings), "
                f"got {self.bertscore_layer}"
            )
        if self.max_length < 8 or self.batch_size < 1:
            raise ConfigError("eval.text.max_length must be >= 8 and eval.text.batch_size >= 1")
        if self.bootstrap_samples < 2:
            raise ConfigError(f"eval.text.bootstrap_samples must be >= 2, got {self.bootstrap_samples}")


@dataclass
class RetrievalConfig:
    """Utility protocol 1: rank the target among sampled untouched items by similarity to the explanation."""

    num_negatives: int = 99
    seed: int = 0
    generic_explanation: str = "This item is recommended for you."
    batch_size: int = 64

    def validate(self) -> None:
        if self.num_negatives < 1:
            raise ConfigError(f"eval.retrieval.num_negatives must be >= 1, got {self.num_negatives}")
        if not self.generic_explanation.strip():
            raise ConfigError("eval.retrieval.generic_explanation must be a non-empty sentence")


@dataclass
class SimulatorConfig:
    """Utility protocol 2: a learned user simulator trained on a split the explainer never saw."""

    enabled: bool = True
    learned: bool = True  # false: only the exact simulator (synthetic), no simulator training
    train_split: str = "valid"  # the explainer trains on `train`; the simulator learns from this split
    holdout_fraction: float = 0.25  # users of train_split kept out of simulator training to measure its AUC
    negatives_per_positive: int = 1
    max_train_examples: int = 20000
    l2: float = 1e-3
    epochs: int = 200  # full-batch L-BFGS iterations
    seed: int = 0
    exact: bool = True  # the exact simulator from the synthetic generator's latent taste (synthetic only)
    # the report marks the learned simulator UNINFORMATIVE when its hold-out AUC, or the spread
    # (max - min) of its mean acceptance shown the reference / the generic / no explanation, is
    # below these (docs/evaluation.md "Reference kinds and simulator informativeness")
    min_holdout_auc: float = 0.7
    min_acceptance_spread: float = 0.02

    def validate(self) -> None:
        if not 0.5 <= self.min_holdout_auc <= 1.0:
            raise ConfigError(
                f"eval.simulator.min_holdout_auc must be in [0.5, 1] (0.5 = chance), got {self.min_holdout_auc}"
            )
        if not 0.0 <= self.min_acceptance_spread <= 1.0:
            raise ConfigError(
                "eval.simulator.min_acceptance_spread must be in [0, 1] (a difference of probabilities), "
                f"got {self.min_acceptance_spread}"
            )
        if self.train_split not in ("train", "valid", "test"):
            raise ConfigError(
                f"eval.simulator.train_split must be train, valid or test, got '{self.train_split}'"
            )
        if self.train_split == "test":
            raise ConfigError("eval.simulator.train_split=test would train the simulator on the scored split")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(
                f"eval.simulator.holdout_fraction must be in (0, 1), got {self.holdout_fraction}"
            )
        if self.negatives_per_positive < 1 or self.max_train_examples < 10 or self.epochs < 1:
            raise ConfigError(
                "eval.simulator: need negatives_per_positive >= 1, max_train_examples >= 10, epochs >= 1"
            )
        if self.l2 < 0:
            raise ConfigError(f"eval.simulator.l2 must be >= 0, got {self.l2}")


@dataclass
class GenerationOptions:
    """How the eval job decodes (seller_dist.eval.generate). Batches are cut from the key-sorted
    split, so a batch holds the same examples whatever the worker count; sampling draws from a
    generator seeded by (seed, batch index): results never depend on how many workers ran."""

    batch_size: int = 16
    max_new_tokens: int = 48
    do_sample: bool = False  # greedy by default
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    supporting_events: int = 3  # most attended history events written per example (fusion attention)
    # model.title_pointer at generation: "hard" = the soft prompt names the top supporting event's
    # title alone; "trained" = as the model was trained (docs/model.md)
    pointer: Literal["hard", "trained"] = "hard"
    # how tokens are decoded (seller_dist.eval.decode): "dynamic" = FrozenLLM.generate's growing KV
    # cache; "static" = a preallocated StaticCache and one fixed-shape step per token (same tokens)
    decode: Literal["dynamic", "static"] = "dynamic"
    # with decode=static: torch.compile that step (CUDA graphs on a GPU); BENCHMARKS.md has the speed
    compile: bool = False

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("eval.generation: batch_size and max_new_tokens must be >= 1")
        if self.decode not in ("dynamic", "static"):
            raise ConfigError(f"eval.generation.decode must be 'dynamic' or 'static', got {self.decode!r}")
        if self.compile and self.decode != "static":
            raise ConfigError("eval.generation.compile needs eval.generation.decode=static")
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError(
                f"eval.generation: need temperature > 0 and 0 < top_p <= 1 (got {self.temperature}, {self.top_p})"
            )
        if self.supporting_events < 0:
            raise ConfigError(f"eval.generation.supporting_events must be >= 0, got {self.supporting_events}")


@dataclass
class EvalWorkersConfig:
    """The Ray workers that generate: each loads the frozen LLM and the trained weights once."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # only with use_gpu
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray on 127.0.0.1

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"eval.workers.num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0 or (self.use_gpu and self.gpus_per_worker <= 0):
            raise ConfigError("eval.workers: cpus_per_worker (and gpus_per_worker with use_gpu) must be > 0")


@dataclass
class EvalConfig:
    """`seller-dist eval` (seller_dist.eval.job): generate with Ray workers, then score the generations
    file (seller_dist.eval.scoring) and write the report (docs/evaluation.md)."""

    data: str = "outputs/data/synthetic"  # dataset root URL (manifest.json, items/, test split)
    split: str = "test"
    # a committed checkpoint (…/checkpoints/step-N), a run's checkpoints folder (newest committed),
    # an export folder (seller_config.json), or "zero-shot": the frozen LLM with the text prompt only
    checkpoint: str = ""
    out: str = "outputs/eval"  # generations.jsonl + report.json/md/png (local path or object-store URL)
    system: str = ""  # name in reports; "" = derived from the model config (seller, bag, ids, dense, none)
    llm_path: str = ""  # "" = the path the checkpoint was trained with (override when the LLM moved)
    # model settings this eval expects, e.g. {history_encoder: bag}: the checkpoint's model config must
    # agree on every key given (guards against scoring the wrong run); with checkpoint=zero-shot they
    # define the model (adapter none)
    expect_model: dict[str, Any] = field(default_factory=dict)
    limit: int = 0  # 0 = the whole split; else the first `limit` examples in shard order
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    workers: EvalWorkersConfig = field(default_factory=EvalWorkersConfig)
    encoder_path: str = ""  # sentence encoder dir; "" = the offline all-MiniLM-L6-v2 package
    encoder_device: str = "auto"  # auto = cuda when available, else cpu; or "cpu", "cuda:0", ...
    max_error_rate: float = 0.0  # bad generation lines tolerated before scoring stops
    # which references to evaluate: "all" scores every example and reports the real (reviews,
    # curated explanations) and templated groups apart; "real" / "template": only that group
    references: Literal["all", "real", "template"] = "all"
    text: TextMetricsConfig = field(default_factory=TextMetricsConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    wandb: Literal["offline", "online", "disabled"] = "disabled"
    wandb_project: str = "seller-dist"
    wandb_dir: str = "outputs/wandb"
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("eval.data: give the dataset root URL (the folder holding manifest.json)")
        if not 0.0 <= self.max_error_rate < 1.0:
            raise ConfigError(f"eval.max_error_rate must be in [0, 1), got {self.max_error_rate}")
        if self.limit < 0:
            raise ConfigError(f"eval.limit must be >= 0 (0 = the whole split), got {self.limit}")
        if self.references not in ("all", "real", "template"):
            raise ConfigError(
                f"eval.references must be all, real or template, got '{self.references}' (all: score "
                "every example, real and templated references reported apart)"
            )
        unknown = sorted(set(self.expect_model) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise ConfigError(
                f"eval.expect_model: unknown model key '{unknown[0]}' (valid: "
                f"{sorted(f.name for f in dataclasses.fields(ModelConfig))})"
            )


# ---------------------------------------------------------------------------------- experiments
# keys a system may not override: every system of a grid trains on the same data, LLM and budget
EXPERIMENT_RESERVED_KEYS = (
    "max_steps",
    "seed",
    "data.manifest",
    "data.seed",
    "model.llm_path",
    "run_name",
    "storage_path",
    "init_from",
)


def flatten_overrides(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"adapter": "dense"}, "optim.lr": 0.003} -> {"model.adapter": "dense", "optim.lr": 0.003}:
    the YAML of an experiment may nest or dot its keys (a `--set a.b.c=v` nests them)."""
    out: dict[str, Any] = {}
    for k, v in (tree or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_overrides(v, key + "."))
        else:
            out[key] = v
    return out


@dataclass
class ExperimentLLMConfig:
    """The frozen LLM every system of an experiment shares: a Hugging Face causal LM, or a small one
    bootstrapped on the dataset's text (as the demo does: no model hub needed)."""

    path: str = ""  # local dir or object-store URL of a causal LM; "" = bootstrap one under <out>/llm
    bootstrap_steps: int = 800
    hidden: int = 128
    vocab_size: int = 1000
    copy_fraction: float = 1.0
    max_len: int = 256
    # true: one LLM bootstrapped per seed (with that seed), so zero-shot varies over seeds too;
    # false: one LLM (seed 0) for every seed: only the trained parts vary
    per_seed: bool = False

    def validate(self) -> None:
        if not self.path and (self.bootstrap_steps < 0 or self.hidden < 4 or self.vocab_size < 100):
            raise ConfigError("llm: need bootstrap_steps >= 0, hidden >= 4 and vocab_size >= 100")
        if not 0.0 <= self.copy_fraction <= 1.0:
            raise ConfigError(f"llm.copy_fraction must be in [0, 1], got {self.copy_fraction}")


@dataclass
class ExperimentBudgetConfig:
    """The same for every system and seed."""

    max_steps: int = 500  # optimizer steps of every trained system
    # the first N examples of the test split (shard order; one per user: N users); 0 = the whole split
    eval_examples: int = 0

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"budget.max_steps must be >= 1, got {self.max_steps}")
        if self.eval_examples < 0:
            raise ConfigError(f"budget.eval_examples must be >= 0 (0 = all), got {self.eval_examples}")


def _default_experiment_systems() -> dict[str, dict[str, Any]]:
    return {
        "seller": {},
        "bag": {"model.history_encoder": "bag", "model.history_text": "sorted"},
        "ids": {"model.prompt": "ids"},
        "dense": {"model.adapter": "dense", "model.ep_size": 1},
        "zero-shot": {"model.adapter": "none"},
    }


@dataclass
class ExperimentConfig:
    """`seller-dist experiment` (seller_dist/experiment.py): a grid of systems x seeds on one prepared
    dataset, the same budget each, one table of mean ± std over seeds plus the per-seed rows."""

    name: str = "synthetic"
    out: str = "outputs/experiments/synthetic"  # results.json/md, cells/, runs/, llm/ (and data/)
    # a prepared dataset root (holds manifest.json); "" = <out>/data. Prepared from `prep_config` +
    # `prep` when it has no manifest yet, used as it is when it has one
    data: str = ""
    prep_config: str = ""  # prep YAML; "" = the packaged seller_dist/configs/prep_synthetic.yaml
    prep: dict[str, Any] = field(default_factory=dict)  # PrepConfig keys over prep_config (nested or dotted)
    llm: ExperimentLLMConfig = field(default_factory=ExperimentLLMConfig)
    # name -> TrainConfig keys (nested or dotted) over `train_config` + `train`; a system with
    # model.adapter=none is not trained: the frozen LLM with the text prompt only (zero-shot)
    systems: dict[str, dict[str, Any]] = field(default_factory=_default_experiment_systems)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: ExperimentBudgetConfig = field(default_factory=ExperimentBudgetConfig)
    train_config: str = ""  # train YAML; "" = the packaged demo one (seller_dist/configs/train_demo.yaml)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys for every trained system
    eval: dict[str, Any] = field(default_factory=dict)  # EvalConfig keys for every evaluation
    # metrics of the per-seed rows in results.md (results.json holds every metric of every run)
    table_metrics: list[str] = field(
        default_factory=lambda: [
            "text/bleu4",
            "text/rougeL",
            "text/bertscore_f1",
            "grounding/generated/cites_history",
            "grounding/generated/cites_reference_event",
            "grounding/attention_top_is_cited",
            "retrieval/generated/mrr",
            "simulator/exact/acceptance/generated",
        ]
    )
    storage: StorageConfig = field(default_factory=StorageConfig)

    def validate(self) -> None:
        if not self.name.strip() or not self.out.strip():
            raise ConfigError("experiment: name and out must be non-empty")
        if not self.systems:
            raise ConfigError("systems: give at least one system (name -> train config overrides)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: give one or more distinct integer seeds, got {self.seeds}")
        for name, overrides in self.systems.items():
            if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
                raise ConfigError(f"systems: '{name}' must be a name without '/', spaces or a leading '.'")
            if not isinstance(overrides, dict):
                raise ConfigError(f"systems.{name}: expected a mapping of train keys, got {overrides!r}")
            fixed = sorted(set(flatten_overrides(overrides)) & set(EXPERIMENT_RESERVED_KEYS))
            if fixed:
                raise ConfigError(
                    f"systems.{name} sets {fixed}: the experiment sets these the same for every system "
                    "(budget.max_steps, seeds, data, llm); change them there"
                )
        fixed = sorted(set(flatten_overrides(self.train)) & set(EXPERIMENT_RESERVED_KEYS))
        if fixed:
            raise ConfigError(f"train sets {fixed}: the experiment sets these (budget, seeds, data, llm)")
