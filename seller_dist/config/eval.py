"""`seller-dist eval`'s config: generation, the metrics, the simulators and the report (docs/evaluation.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from seller_dist.config.model import ModelConfig
from seller_dist.config.storage import StorageConfig
from seller_dist.config.workers import WorkersConfig
from seller_dist.errors import ConfigError


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
    workers: WorkersConfig = field(default_factory=lambda: WorkersConfig(num_workers=1))
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
        if self.workers.max_failures:
            raise ConfigError(
                f"workers.max_failures={self.workers.max_failures}: the eval job does not restart lost "
                "workers (a failed run is rerun whole); leave it 0"
            )
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
