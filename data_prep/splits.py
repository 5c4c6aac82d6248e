"""Which split an example goes to: the per-user time split (`split: time`, data_prep.examples.split_for) or,
with `split: source`, its target event's own split, from the source's published split (xrec), a column of
the input (`split_column`, read by data_prep.sources.records.split_value) or two global cut-offs (`split_cutoffs`). docs/data.md "Splits" states the rules;
data_prep.examples applies them in both engines.
"""

from __future__ import annotations

# a held-out event is never in the history of an example of an earlier-ranked split
SPLIT_RANK = {"train": 0, "valid": 1, "test": 2}


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
