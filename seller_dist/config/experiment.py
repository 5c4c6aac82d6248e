"""`seller-dist experiment`'s config: a grid of systems x seeds on one dataset, one budget (docs/results.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seller_dist.config.storage import StorageConfig
from seller_dist.errors import ConfigError
from seller_dist.strategy_settings import dotted_items

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


# the rows a results table shows first: text quality, grounding, retrieval (also the demo's table)
HEADLINE_METRICS = (
    "text/bleu4",
    "text/rougeL",
    "text/bertscore_f1",
    "grounding/generated/cites_history",
    "grounding/generated/cites_reference_event",
    "grounding/attention_top_is_cited",
    "retrieval/generated/mrr",
)


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
        default_factory=lambda: [*HEADLINE_METRICS, "simulator/exact/acceptance/generated"]
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
            fixed = sorted(set(dotted_items(overrides)) & set(EXPERIMENT_RESERVED_KEYS))
            if fixed:
                raise ConfigError(
                    f"systems.{name} sets {fixed}: the experiment sets these the same for every system "
                    "(budget.max_steps, seeds, data, llm); change them there"
                )
        fixed = sorted(set(dotted_items(self.train)) & set(EXPERIMENT_RESERVED_KEYS))
        if fixed:
            raise ConfigError(f"train sets {fixed}: the experiment sets these (budget, seeds, data, llm)")
