"""Bad-input accounting: every rejected input record is counted by reason and sampled. Prep (a
source's input records) and evaluation (a generations file's lines) both stop when bad / seen
exceeds their `max_error_rate`, so it lives here and `data_prep` imports it (tests/unit/test_boundaries.py).
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from seller_dist.errors import UserError


class TooManyBadRecords(UserError, RuntimeError):
    """The input is worse than the configured error rate; nothing was published."""


class DamagedInputError(UserError, RuntimeError):
    """An input file cannot be read to its end (a truncated or corrupt compressed stream, an
    unreadable Parquet row group): the records after the damage would be lost, so the prep fails
    and publishes nothing unless the file is listed in `allow_damaged_inputs`."""


@dataclass
class BadRecordReport:
    max_samples: int = 20
    seen: Counter = field(default_factory=Counter)  # input kind (e.g. "review.json") -> records read
    bad: Counter = field(default_factory=Counter)  # reason -> count
    samples: list[dict[str, Any]] = field(default_factory=list)
    # input files (names, URLs or globs) the user accepts as damaged: their unreadable rest is
    # recorded in `damaged` (and the manifest) instead of failing the run
    allow_damaged: tuple[str, ...] = ()
    damaged: list[dict[str, Any]] = field(default_factory=list)

    def empty_like(self) -> BadRecordReport:
        """An empty report with this one's settings (one per read task, merged back later)."""
        return BadRecordReport(max_samples=self.max_samples, allow_damaged=tuple(self.allow_damaged))

    def damaged_input(self, where: str, at: str, reason: str, **lost: Any) -> None:
        """The rest of input `where` from `at` on cannot be read. Fails the run (DamagedInputError,
        one line naming the file and the place) unless the file is allowed; then what was lost is
        recorded exactly as known (`lost_records` from Parquet metadata, `lost_bytes` of a text file)."""
        name = where.rsplit("/", 1)[-1]
        if not any(fnmatch.fnmatchcase(where, p) or fnmatch.fnmatchcase(name, p) for p in self.allow_damaged):
            raise DamagedInputError(
                f"{where}: cannot be read past {at}: {reason}. Nothing was published: the records after "
                f"that point would be lost. Repair or re-download the file, or accept the loss with "
                f"--set 'allow_damaged_inputs=[{name}]' (the manifest then records what was lost)"
            )
        self.damaged.append({"file": where, "at": at, "reason": reason, **lost})

    def saw(self, where: str, n: int = 1) -> None:
        self.seen[where] += n

    def reject(
        self,
        where: str,
        line: int | str | None,
        field_name: str,
        reason: str,
        raw: Any = None,
        count: int = 1,
    ) -> None:
        """Count bad records (one, or `count` for a malformed record that swallowed that many input
        lines), sampled once. `where` is the input file, `line` the line number or record key."""
        self.bad[f"{field_name}: {reason}"] += count
        if len(self.samples) < self.max_samples:
            text = raw if isinstance(raw, str) else repr(raw)
            self.samples.append(
                {
                    "file": where,
                    "record": line,
                    "field": field_name,
                    "reason": reason,
                    "raw": (text or "")[:300],
                }
            )

    @property
    def total_seen(self) -> int:
        return sum(self.seen.values())

    @property
    def total_bad(self) -> int:
        return sum(self.bad.values())

    @property
    def error_rate(self) -> float:
        return self.total_bad / max(1, self.total_seen)

    def check(self, max_error_rate: float) -> None:
        if self.total_bad and self.error_rate > max_error_rate:
            top = ", ".join(f"{r} ({n})" for r, n in self.bad.most_common(5))
            first = self.samples[0] if self.samples else {}
            raise TooManyBadRecords(
                f"{self.total_bad} of {self.total_seen} input records are bad "
                f"({self.error_rate:.2%} > max_error_rate {max_error_rate:.2%}); nothing was published. "
                f"Reasons: {top}. First: file {first.get('file')}, record {first.get('record')}, "
                f"field '{first.get('field')}': {first.get('reason')}. "
                "Fix the input or raise max_error_rate."
            )

    def merge(self, other: BadRecordReport) -> None:
        self.seen.update(other.seen)
        self.bad.update(other.bad)
        self.damaged.extend(other.damaged)
        room = self.max_samples - len(self.samples)
        if room > 0:
            self.samples.extend(other.samples[:room])

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_seen": dict(self.seen),
            "records_bad": self.total_bad,
            "error_rate": self.error_rate,
            "bad_by_reason": dict(self.bad.most_common()),
            "samples": self.samples,
            "damaged_inputs": self.damaged,
        }


@dataclass
class OrderedSamples:
    """Bad-record samples of many independent pieces (one per user), kept as the `limit` with the
    smallest keys: the report is then the same whatever order the pieces were cut in (the local
    engine's partitions, engine=ray's groups)."""

    limit: int
    items: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def add_report(self, key: str, part: BadRecordReport, into: BadRecordReport) -> None:
        """Counts of `part` into `into` now; its samples kept here until `finish`."""
        into.seen.update(part.seen)
        into.bad.update(part.bad)
        into.damaged.extend(part.damaged)
        self.extend([(key, i, s) for i, s in enumerate(part.samples[: self.limit])])

    def kept(self) -> list[tuple[str, int, dict[str, Any]]]:
        """The candidates still in the running (to merge with another OrderedSamples via extend)."""
        return sorted(self.items, key=lambda t: t[:2])[: self.limit]

    def extend(self, kept: list) -> None:
        self.items.extend((str(k), int(i), s) for k, i, s in kept)
        if len(self.items) > 4 * self.limit + 64:
            self.items = self.kept()

    def finish(self, into: BadRecordReport) -> None:
        """Append the kept samples (in key order) after `into`'s own, up to its max_samples."""
        room = into.max_samples - len(into.samples)
        if room > 0:
            into.samples.extend(s for _, _, s in sorted(self.items, key=lambda t: t[:2])[:room])
        self.items = []
