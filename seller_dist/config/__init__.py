"""Every seller-dist config as typed dataclasses, one module per job (prep, train, eval, experiment)
and per shared part (storage, workers, stream, model), and how a config is loaded (loading.py):
`load_config(PrepConfig, "prep.yaml", ["output=s3://b/x"])`, where each `validate()` raises a
one-line `ConfigError` that names the key and what to change.
"""

from seller_dist.config.eval import (
    EvalConfig,
    GenerationOptions,
    RetrievalConfig,
    SimulatorConfig,
    TextMetricsConfig,
)
from seller_dist.config.experiment import (
    EXPERIMENT_RESERVED_KEYS,
    ExperimentBudgetConfig,
    ExperimentConfig,
    ExperimentLLMConfig,
)
from seller_dist.config.loading import (
    ConfigError,
    apply_overrides,
    coerce,
    dump_yaml,
    from_dict,
    load_config,
    parse_override,
    to_dict,
    validate_tree,
)
from seller_dist.config.model import ModelConfig
from seller_dist.config.prep import SOURCES, EventsColumnsConfig, PrepConfig, SyntheticSourceConfig
from seller_dist.config.storage import StorageConfig
from seller_dist.config.stream import StreamConfig
from seller_dist.config.train import (
    CLASS_PATH,
    CallbackConfig,
    CheckpointConfig,
    LoggingConfig,
    OptimConfig,
    TrainConfig,
    TrainEvalConfig,
)
from seller_dist.config.workers import WorkersConfig
from seller_dist.strategy_settings import LLM_LAYOUTS, LLMLayout, StrategySettings, dotted_items

__all__ = [
    "CLASS_PATH", "EXPERIMENT_RESERVED_KEYS", "LLM_LAYOUTS", "SOURCES", "CallbackConfig", "CheckpointConfig",
    "ConfigError", "EvalConfig", "EventsColumnsConfig", "ExperimentBudgetConfig",
    "ExperimentConfig", "ExperimentLLMConfig", "GenerationOptions", "LLMLayout", "LoggingConfig", "ModelConfig",
    "OptimConfig", "PrepConfig", "RetrievalConfig", "SimulatorConfig", "StorageConfig", "StrategySettings",
    "StreamConfig", "SyntheticSourceConfig", "TextMetricsConfig", "TrainConfig", "TrainEvalConfig",
    "WorkersConfig", "apply_overrides", "coerce", "dotted_items", "dump_yaml",
    "from_dict", "load_config", "parse_override", "to_dict", "validate_tree",
]  # fmt: skip
