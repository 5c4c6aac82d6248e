"""Real and templated references, kept apart (docs/evaluation.md, "Reference kinds").
A system that learned prep's template scores well against templated references without explaining anything, so
this module sorts examples by the kind of their reference (`explanation_source` review or reference: real;
template: templated) for the eval to report every text and grounding metric per kind, real first, and for
`eval.references` to restrict the whole eval to one kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from seller_dist.data.schema import EXPLANATION_SOURCES, ExampleRecord

GROUPS = ("real", "template")  # report order: real references first
GROUP_OF_SOURCE = {"review": "real", "reference": "real", "template": "template"}
assert set(GROUP_OF_SOURCE) == set(EXPLANATION_SOURCES), "every explanation_source needs a group"


class EmptyReferenceGroup(ValueError):
    """eval.references names a group the scored examples do not have."""


def group_of(record: ExampleRecord) -> str:
    return GROUP_OF_SOURCE[record.explanation_source]


def counts(records: Iterable[ExampleRecord]) -> dict[str, int]:
    """Examples per group, every group named (0 when absent)."""
    c = Counter(group_of(r) for r in records)
    return {g: c.get(g, 0) for g in GROUPS}


def source_counts(records: Iterable[ExampleRecord]) -> dict[str, int]:
    """Examples per explanation_source (what `seller-dist inspect` prints), sorted by name."""
    return dict(sorted(Counter(r.explanation_source for r in records).items()))


def keep(mode: str, record: ExampleRecord) -> bool:
    """Whether `eval.references=mode` evaluates this record."""
    return mode == "all" or group_of(record) == mode


def check_not_empty(mode: str, records: Sequence[ExampleRecord], where: str) -> None:
    """A clear error when `eval.references=mode` would evaluate nothing."""
    if mode == "all" or any(keep(mode, r) for r in records):
        return
    srcs = source_counts(records)
    wanted = sorted(s for s, g in GROUP_OF_SOURCE.items() if g == mode)
    raise EmptyReferenceGroup(
        f"eval.references={mode}: {where} has no example with a {mode} reference (explanation_source "
        f"{' or '.join(wanted)}); its {len(records)} examples have explanation sources {srcs}. "
        "Set eval.references=all (or the other group)"
    )


def indices_by_group(records: Sequence[ExampleRecord]) -> dict[str, list[int]]:
    """Positions of the records per group, in GROUPS order."""
    out: dict[str, list[int]] = {g: [] for g in GROUPS}
    for i, r in enumerate(records):
        out[group_of(r)].append(i)
    return out
