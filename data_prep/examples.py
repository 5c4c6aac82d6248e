"""One user's events -> (history window, target) examples with their split and reference explanation: the
ONE cutting implementation, which both engines call per user (`cut_user_payloads`) so their records
are identical. The rules (dedup, stable time sort, history window, `split: time` or
`split: source`, review / template / reference text) are in docs/data.md, "Examples and the split" and
"Splits".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from data_prep.sources.base import RawEvent, RawItem
from data_prep.splits import SPLIT_RANK, split_by_cutoffs
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import (
    ExampleRecord,
    HistoryEvent,
    RecordError,
    validate_example,
    validate_history_event,
)
from seller_dist.data.synthetic_reference import ACTION_VERBS

if TYPE_CHECKING:
    from data_prep.vocab import ParentVocab


@dataclass
class CatalogItem:
    item_id: str
    item_idx: int  # 1-based, by sorted item_id
    title: str
    attributes: dict[str, str]
    text: str = ""
    has_metadata: bool = True  # False: the item only appears in events


@dataclass
class Catalog:
    """The item vocabulary: item_id -> CatalogItem with a deterministic 1-based index."""

    items: dict[str, CatalogItem] = field(default_factory=dict)

    @staticmethod
    def build(
        raw_items: Sequence[RawItem],
        event_item_ids: Sequence[str] | set[str] = (),
        parent: ParentVocab | None = None,
    ) -> Catalog:
        """Items from the source (first occurrence wins) plus items seen only in events (no metadata);
        item_idx follows sorted item_id so the same inputs always give the same indices. With `parent`
        (vocab_from, data_prep.vocab) every parent item keeps its item_idx, also one absent from this window
        (metadata from this window's items when it has them, else the parent's), and new items follow
        after parent.num_items in sorted item_id order."""
        by_id: dict[str, RawItem] = {}
        for it in raw_items:
            by_id.setdefault(it.item_id, it)
        cat = Catalog()
        start = 1
        if parent is not None:
            for pit in sorted(parent.items.values(), key=lambda p: p.item_idx):
                meta = by_id.get(pit.item_id, pit)
                has_metadata = pit.item_id in by_id or pit.has_metadata
                cat.items[pit.item_id] = CatalogItem(
                    pit.item_id, pit.item_idx, meta.title, dict(meta.attributes), meta.text, has_metadata
                )
            start = parent.num_items + 1
        ids = sorted((set(by_id) | set(event_item_ids)) - set(cat.items))
        for idx, iid in enumerate(ids, start=start):
            raw = by_id.get(iid, RawItem(iid))
            cat.items[iid] = CatalogItem(iid, idx, raw.title, dict(raw.attributes), raw.text, iid in by_id)
        return cat

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items

    def __getitem__(self, item_id: str) -> CatalogItem:
        return self.items[item_id]

    def __len__(self) -> int:
        return len(self.items)

    def display_title(self, item_id: str) -> str:
        """Title for prompts and templates; an item without metadata is named by its id."""
        it = self.items.get(item_id)
        return (it.title if it and it.title else "") or f"item {item_id}"


@dataclass
class CutParams:
    max_history: int
    min_history: int = 1
    examples_per_user: int = 0
    templated: bool = False
    text_kind: str = "review"  # explanation_source for event texts: "review", or "reference" (XRec)
    split: str = "time"  # "time" (per user) or "source" (each event's own split; data_prep.splits)
    cutoffs: tuple[int, int] | None = None  # split=source by split_cutoffs: (valid_from, test_from)
    # events without text are not targets (only history), not bad records: a source where text is the
    # exception (XRec's explained pairs, a log's reviewed events) with template_missing_text false
    text_optional: bool = False


# An explainer writes the reference for a templated source: (history, target, catalog) -> (text, meta).
Explainer = Callable[[list[RawEvent], RawEvent, Catalog], tuple[str, dict[str, Any]]]


def template_explanation(
    history: list[RawEvent], target: RawEvent, catalog: Catalog
) -> tuple[str, dict[str, Any]]:
    """Generic reference for sources without review text: cite the most recent history event that
    shares an attribute value with the target (else the most recent event), and describe the target."""
    tgt = catalog.items.get(target.item_id)
    tattrs = tgt.attributes if tgt else {}
    cited = len(history) - 1
    shared: list[str] = []
    for i in range(len(history) - 1, -1, -1):
        h = catalog.items.get(history[i].item_id)
        common = [v for k, v in sorted(tattrs.items()) if h and h.attributes.get(k) == v]
        if common:
            cited, shared = i, common
            break
    ev = history[cited]
    verb = ACTION_VERBS.get(ev.action, "interacted with")
    desc = ", ".join(f"{v}" for _, v in sorted(tattrs.items()) if v)
    title = catalog.display_title(target.item_id)
    text = f"Because you recently {verb} {catalog.display_title(ev.item_id)}, {title}"
    text += f" ({desc})" if desc else ""
    text += (
        f" shares its {' and '.join(shared)} and fits what you are looking for now."
        if shared
        else (" continues what you were browsing.")
    )
    return text, {"cited_item_id": ev.item_id, "cited_offset": len(history) - 1 - cited}


def dedupe_and_sort(
    user_id: str, events: Sequence[RawEvent], report: BadRecordReport | None = None
) -> list[RawEvent]:
    """Drop identical events (counted as "duplicate event"), then sort by time (stable)."""
    seen: set[tuple[str, str, int, str]] = set()
    out: list[RawEvent] = []
    for ev in events:
        k = (user_id, ev.item_id, ev.timestamp, ev.action)
        if k in seen:
            if report is not None:
                report.reject(
                    f"user {user_id}", f"{ev.item_id}@{ev.timestamp}", "event", "duplicate event", repr(k)
                )
            continue
        seen.add(k)
        out.append(ev)
    out.sort(key=lambda e: e.timestamp)
    return out


def example_key(split: str, user_id: str, ev: RawEvent) -> str:
    """Deterministic and WebDataset-safe (no '.' or '/')."""
    digest = hashlib.sha1(f"{user_id}\x1f{ev.item_id}\x1f{ev.timestamp}\x1f{ev.action}".encode()).hexdigest()
    return f"{split}-{digest[:16]}"


def split_for(position: int, n_examples: int) -> str:
    """Time split of a user's examples (0 = oldest): last -> test, previous -> valid, rest -> train."""
    if n_examples >= 3:
        if position == n_examples - 1:
            return "test"
        if position == n_examples - 2:
            return "valid"
        return "train"
    if n_examples == 2:
        return "test" if position == 1 else "train"
    return "train"  # a lone example held out would have no train example of its user before it


def _history_event(ev: RawEvent, catalog: Catalog) -> HistoryEvent:
    it = catalog[ev.item_id]
    return HistoryEvent(
        item_id=ev.item_id,
        item_idx=it.item_idx,
        timestamp=ev.timestamp,
        action=ev.action,
        rating=ev.rating,
        title=it.title,
        review=ev.text if ev.text and ev.text.strip() else None,
    )


def event_splits(evs: Sequence[RawEvent], params: CutParams) -> list[str]:
    """split=source: each event's split (by the cut-offs, else its own; an event without one is train)."""
    if params.cutoffs is not None:
        return [split_by_cutoffs(e.timestamp, params.cutoffs) for e in evs]
    return [e.split or "train" for e in evs]


def _time_candidates(n: int, params: CutParams) -> list[tuple[int, range]]:
    return [(t, range(max(0, t - params.max_history), t)) for t in range(params.min_history, n)]


def _source_candidates(
    evs: Sequence[RawEvent], splits: list[str], params: CutParams, held_out_dropped: dict[str, int] | None
) -> list[tuple[int, list[int]]]:
    """(target, history indices) under split=source: history = the last max_history events with a
    strictly earlier timestamp whose split ranks no later than the target's (train < valid < test)."""
    visible: list[list[int]] = [[], [], []]  # event indices a target of split rank r may see
    out: list[tuple[int, list[int]]] = []
    i, n = 0, len(evs)
    while i < n:
        j = i
        while j < n and evs[j].timestamp == evs[i].timestamp:
            j += 1
        for t in range(i, j):  # ties: an event at the same second is not history
            seen = visible[SPLIT_RANK[splits[t]]]
            if len(seen) >= params.min_history:
                out.append((t, seen[-params.max_history :]))
            elif held_out_dropped is not None and splits[t] != "train":
                held_out_dropped[splits[t]] = held_out_dropped.get(splits[t], 0) + 1
        for t in range(i, j):
            for r in range(SPLIT_RANK[splits[t]], 3):
                visible[r].append(t)
        i = j
    return out


def cut_user_payloads(
    user_id: str,
    events: Sequence[RawEvent],
    catalog: Catalog,
    params: CutParams,
    report: BadRecordReport,
    explainer: Explainer | None = None,
    held_out_dropped: dict[str, int] | None = None,
) -> list[tuple[ExampleRecord, bytes]]:
    """All examples of one user, split and validated (bad ones reported and skipped), each with its
    shard payload (the bytes of `rec.to_json()`); `held_out_dropped` (split=source) counts valid/test
    events with fewer than min_history earlier events (no example).
    """
    evs = dedupe_and_sort(user_id, events, report)
    missing = [e for e in evs if e.item_id not in catalog]
    if missing:
        for e in missing:
            report.reject(
                f"user {user_id}",
                f"{e.item_id}@{e.timestamp}",
                "item_id",
                "not in the item catalog",
                e.item_id,
            )
        evs = [e for e in evs if e.item_id in catalog]
    by_source = params.split == "source"
    splits = event_splits(evs, params) if by_source else []
    candidates: list[tuple[int, range | list[int]]] = (
        list(_source_candidates(evs, splits, params, held_out_dropped))
        if by_source
        else list(_time_candidates(len(evs), params))
    )
    explain = explainer or template_explanation
    # (position, history indices, text, source, meta)
    targets: list[tuple[int, range | list[int], str, str, dict[str, Any]]] = []
    for t, hist_idx in candidates:
        ev = evs[t]
        if ev.text is not None and ev.text.strip():
            targets.append((t, hist_idx, ev.text.strip(), params.text_kind, dict(ev.meta)))
        elif params.templated:
            text, meta = explain([evs[j] for j in hist_idx], ev, catalog)
            targets.append((t, hist_idx, text, "template", {**ev.meta, **meta}))
        elif params.text_optional:
            continue
        else:
            report.reject(
                f"user {user_id}",
                f"{ev.item_id}@{ev.timestamp}",
                "text",
                "empty explanation text",
                ev.text,
            )
    if params.examples_per_user > 0:
        if by_source:  # the last N train targets; every held-out target stays
            train = [k for k, x in enumerate(targets) if splits[x[0]] == "train"]
            drop = set(train[: max(0, len(train) - params.examples_per_user)])
            targets = [x for k, x in enumerate(targets) if k not in drop]
        else:
            targets = targets[-params.examples_per_user :]
    if not targets:
        return []
    first = min((h[0] for _, h, *_ in targets if len(h)), default=0)
    last = targets[-1][0]  # history entries are needed for evs[first:last]
    # an event is in up to max_history histories: build, validate and encode its entry once per user
    entries = [_history_event(h, catalog) for h in evs[first:last]]
    dicts = [dict(h.__dict__) for h in entries]
    problems = [history_event_problem(d) for d in dicts]
    frags = [json.dumps(d, ensure_ascii=False, sort_keys=True) for d in dicts]
    out: list[tuple[ExampleRecord, bytes]] = []
    for pos, (t, hist_idx, text, source, meta) in enumerate(targets):
        ev = evs[t]
        split = splits[t] if by_source else split_for(pos, len(targets))
        it = catalog[ev.item_id]
        if isinstance(hist_idx, range):
            idx: range | list[int] = range(hist_idx.start - first, hist_idx.stop - first)
            history = entries[idx.start : idx.stop]
        else:
            idx = [j - first for j in hist_idx]
            history = [entries[j] for j in idx]
        rec = ExampleRecord(
            key=example_key(split, user_id, ev),
            user_id=user_id,
            item_id=ev.item_id,
            item_idx=it.item_idx,
            timestamp=ev.timestamp,
            history=history,
            item_attributes=dict(it.attributes),
            item_title=it.title,
            explanation=text,
            split=split,
            explanation_source=source,
            aspects=list(ev.aspects),
            rating=ev.rating,
            action=ev.action,
            meta=meta,
        )
        top = {**rec.__dict__, "history": []}
        try:
            for k, j in enumerate(idx):
                if problems[j] is not None:
                    field_name, reason = problems[j]
                    raise RecordError(f"history[{k}].{field_name}", reason, rec.key, f"user {user_id}")
            validate_example(top, where=f"user {user_id}")
            if len(idx) and dicts[idx[-1]]["timestamp"] > rec.timestamp:
                raise RecordError("timestamp", "target is older than its history (future leak)", rec.key)
        except RecordError as e:
            report.reject(f"user {user_id}", rec.key, e.field, e.reason, repr(record_dict(rec))[:300])
            continue
        payload = json.dumps(top, ensure_ascii=False, sort_keys=True)
        # keys are sorted, so '"history": []' is the record's own field (inside strings quotes are escaped)
        payload = payload.replace('"history": []', '"history": [' + ", ".join(frags[j] for j in idx) + "]", 1)
        out.append((rec, payload.encode("utf-8")))
    return out


def cut_and_report(
    uid: str,
    evs: list[RawEvent],
    catalog: Catalog,
    params: CutParams,
    explain: Explainer | None,
    max_samples: int,
    held_out_dropped: dict[str, int] | None = None,
) -> tuple[list[tuple[ExampleRecord, bytes]], BadRecordReport]:
    """One user's (record, payload) pairs and that user's own bad-record report (merged in user
    order later, seller_dist.data.bad_records.OrderedSamples)."""
    user_report = BadRecordReport(max_samples=max_samples)
    return cut_user_payloads(uid, evs, catalog, params, user_report, explain, held_out_dropped), user_report


def history_event_problem(d: dict[str, Any]) -> tuple[str, str] | None:
    """(field, reason) of the first schema v1 violation of one history entry, or None."""
    try:
        validate_history_event(d, "h")
    except RecordError as e:
        return e.field.removeprefix("h."), e.reason
    return None


def record_dict(rec: ExampleRecord) -> dict[str, Any]:
    """Plain dict of a record, the same as dataclasses.asdict but without its deep copies (far faster)."""
    d = dict(rec.__dict__)
    d["history"] = [dict(h.__dict__) for h in rec.history]
    return d


# ------------------------------------------------------------------------ user subsample (max_users)
def user_rank(user_id: str, seed: int) -> int:
    """A user's place in the `max_users` subsample order: a hash of (seed, user id), so the kept users
    depend only on the ids and the seed: the same on both engines, in any read order, on every rerun."""
    digest = hashlib.sha1(f"{seed}\x1f{user_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


class UserSample:
    """The `n` users with the smallest (user_rank, user id) among those added: memory O(n) whatever
    the number of users or events. Engines feed it every event's user (a Ray parse task its part's
    users; the driver merges the tasks' kept users), then cut only the kept users."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError(f"UserSample: n must be >= 1, got {n}")
        self.n, self.seed = n, seed
        self._ranks: dict[str, int] = {}
        self._bound: tuple[int, str] | None = None  # the n-th smallest key so far, once n are known

    def add(self, user_id: str) -> None:
        if user_id in self._ranks:
            return
        key = (user_rank(user_id, self.seed), user_id)
        if self._bound is not None and key >= self._bound:
            return  # n users rank before it: it can never be kept
        self._ranks[user_id] = key[0]
        if len(self._ranks) >= 2 * self.n:
            self._prune()

    def update(self, user_ids: Iterable[str]) -> None:
        for u in user_ids:
            self.add(u)

    def _prune(self) -> None:
        keys = sorted((r, u) for u, r in self._ranks.items())[: self.n]
        self._ranks = {u: r for r, u in keys}
        if len(keys) == self.n:
            self._bound = keys[-1]

    def kept(self) -> frozenset[str]:
        self._prune()
        return frozenset(self._ranks)
