"""Which split an example goes to: the per-user time split (`split: time`, data_prep.examples.split_for) or,
with `split: source`, its target event's own split, from the source's published split (xrec), a column of
the input (`split_column`) or two global cut-offs (`split_cutoffs`). docs/data.md "Splits" states the rules;
data_prep.examples applies them in both engines.
"""

from __future__ import annotations

from typing import Any

from data_prep.sources.records import BadField

# the values a split column may hold (case-insensitive) -> the dataset's split names
SPLIT_VALUES = {
    "train": "train",
    "trn": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
    "tst": "test",
    "testing": "test",
}
# a held-out event is never in the history of an example of an earlier-ranked split
SPLIT_RANK = {"train": 0, "valid": 1, "test": 2}


def split_value(value: Any, column: str) -> str:
    """A split cell -> "train" / "valid" / "test"; anything else is a bad record (value-free reason)."""
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        raise BadField(column, "missing split")
    split = SPLIT_VALUES.get(str(value).strip().lower())
    if split is None:
        raise BadField(column, "expected a split: train, valid or test (also trn/val/tst, validation, dev)")
    return split


def split_by_cutoffs(timestamp: int, cutoffs: tuple[int, int]) -> str:
    """split_cutoffs [VALID_FROM, TEST_FROM]: before VALID_FROM train, before TEST_FROM valid, else test."""
    if timestamp < cutoffs[0]:
        return "train"
    return "valid" if timestamp < cutoffs[1] else "test"


def split_rule(split: str, source: str, column: str | None, cutoffs: list | None) -> str:
    """The manifest's one-line statement of how the examples were split."""
    if split == "time":
        return "per user by time: last example test, previous valid, rest train"
    if cutoffs is not None:
        return (
            f"by global cut-offs {list(cutoffs)}: target before the first train, before the second valid, "
            "rest test; history = the user's events strictly earlier, without held-out events of a later split"
        )
    origin = f"the input's '{column}' field" if column else f"{source}'s published split"
    return (
        f"{origin}: each target keeps its event's split; history = the user's events strictly earlier, "
        "without held-out events of a later split"
    )
