"""Moved to seller_dist/config/loading.py: import these names from `seller_dist.config`. This module
only hands them on, so code written against the old path (branches not merged yet) keeps working."""

from seller_dist.config.loading import (
    ConfigError,
    add_override_argument,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_config,
    parse_override,
    to_dict,
    validate_tree,
)

__all__ = [
    "ConfigError", "add_override_argument", "apply_overrides", "dump_yaml", "from_dict", "load_config",
    "parse_override", "to_dict", "validate_tree",
]  # fmt: skip
