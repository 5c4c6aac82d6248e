"""A production-like synthetic source whose reference explanations depend on the ORDER of the history: a
target's reference cites the most recent history event sharing its category or brand (template:
seller_dist/data/synthetic_reference.py, shared with evaluation's oracles), so a bag-of-history model cannot
tell which event to cite; each example's meta holds the ground truth. Users are generated one at a time from
seeds. Items, users, sessions and meta fields: docs/data.md, "synthetic".
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from data_prep.examples import Explainer
from data_prep.sources.base import RawEvent, RawItem, Source
from seller_dist.config import ConfigError, SyntheticSourceConfig, from_dict
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.synthetic_reference import order_dependent_explanation

CATEGORY_NOUNS = (
    ("books", "Novel"),
    ("games", "Board Game"),
    ("garden", "Rake"),
    ("kitchen", "Kettle"),
    ("music", "Guitar"),
    ("outdoors", "Tent"),
    ("fitness", "Yoga Mat"),
    ("audio", "Headphones"),
    ("toys", "Puzzle"),
    ("beauty", "Face Serum"),
    ("office", "Desk Lamp"),
    ("pets", "Dog Bed"),
    ("shoes", "Trail Shoe"),
    ("tools", "Drill"),
    ("baby", "Stroller"),
    ("camera", "Lens"),
)
ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Pro", "Ultra", "Lite", "Smart", "Vintage", "Nova")
SYLLABLES = ("ka", "lo", "mi", "ra", "te", "vo", "zu", "ne", "pa", "si", "do", "qu")
PRICE_BUCKETS = ("budget", "mid", "premium", "luxury")
ACTION_WEIGHTS = (("view", 0.42), ("click", 0.24), ("cart", 0.1), ("purchase", 0.14), ("rate", 0.1))
START_UNIX = 1_600_000_000


def category_name(c: int) -> str:
    base, noun = CATEGORY_NOUNS[c % len(CATEGORY_NOUNS)]
    return base if c < len(CATEGORY_NOUNS) else f"{base}-{c // len(CATEGORY_NOUNS)}"


def brand_name(b: int) -> str:
    r = random.Random(f"brand:{b}")
    name = "".join(r.choice(SYLLABLES) for _ in range(2 + b % 2)).capitalize()
    return f"{name}{b}" if b >= len(SYLLABLES) ** 2 else name


class SyntheticSource(Source):
    name = "synthetic"
    templated = True  # references come from the order-dependent template below

    def __init__(self, inputs: dict[str, str], options: dict[str, Any], report: BadRecordReport):
        super().__init__(inputs, options, report)
        if inputs:
            raise ConfigError(f"inputs: the synthetic source reads no files, got {sorted(inputs)}")
        self.cfg = from_dict(SyntheticSourceConfig, options, key="source_options")
        self._catalog = self._make_catalog()
        self._by_category: dict[int, list[int]] = {}
        self._by_brand: dict[int, list[int]] = {}
        for i, (c, b, _) in enumerate(self._item_meta):
            self._by_category.setdefault(c, []).append(i)
            self._by_brand.setdefault(b, []).append(i)
        self._live_categories = sorted(self._by_category)

    # ------------------------------------------------------------------------------------ catalog
    def _make_catalog(self) -> list[RawItem]:
        cfg = self.cfg
        rng = random.Random(f"synthetic-items:{cfg.seed}")
        self._brand_home = [b % cfg.num_categories for b in range(cfg.num_brands)]
        self._item_meta: list[tuple[int, int, int]] = []  # (category, brand, price bucket)
        items: list[RawItem] = []
        for i in range(cfg.num_items):
            c = i % cfg.num_categories if i < cfg.num_categories else rng.randrange(cfg.num_categories)
            home = [b for b in range(cfg.num_brands) if self._brand_home[b] == c]
            b = rng.choice(home) if home and rng.random() < 0.85 else rng.randrange(cfg.num_brands)
            p = min(len(PRICE_BUCKETS) - 1, int(rng.expovariate(1.2)))
            self._item_meta.append((c, b, p))
            noun = CATEGORY_NOUNS[c % len(CATEGORY_NOUNS)][1]
            title = f"{brand_name(b)} {rng.choice(ADJECTIVES)} {noun} {100 + i}"
            attrs = {"category": category_name(c), "brand": brand_name(b), "price_bucket": PRICE_BUCKETS[p]}
            text = (
                f"{title}: a {PRICE_BUCKETS[p]} {noun.lower()} from {brand_name(b)} "
                f"in our {category_name(c)} range."
            )
            items.append(RawItem(item_id=f"item{i:06d}", title=title, attributes=attrs, text=text))
        return items

    def items(self) -> Iterator[RawItem]:
        yield from self._catalog

    @property
    def num_users(self) -> int:
        return self.cfg.num_users

    @property
    def categories(self) -> list[str]:
        return [category_name(c) for c in range(self.cfg.num_categories)]

    # ------------------------------------------------------------------------------------- events
    def user_events(self, u: int) -> list[RawEvent]:
        """All events of user u (time-ordered), from a seed derived from (seed, u) only."""
        cfg = self.cfg
        rng = random.Random(f"synthetic-user:{cfg.seed}:{u}")
        cats = self._live_categories
        taste = [0.0] * cfg.num_categories
        for c in rng.sample(cats, k=min(len(cats), rng.randint(1, 3))):
            taste[c] += rng.uniform(0.5, 1.5)
        self._normalize(taste)
        n = rng.randint(cfg.events_per_user_min, cfg.events_per_user_max)
        t = START_UNIX + rng.randrange(365 * 86400)
        uid = f"user{u:07d}"
        events: list[RawEvent] = []
        session = 0
        favourite_brands: list[int] = []
        while len(events) < n:
            if events:
                t += int(rng.uniform(3600, 10 * 86400))  # hours to days between sessions
                if rng.random() < cfg.drift:  # taste moves towards a (maybe new) category
                    new = rng.choice(cats)
                    taste = [0.5 * w for w in taste]
                    taste[new] += 0.5
                    self._normalize(taste)
            session += 1
            session_len = min(n - len(events), rng.randint(1, 6))
            focus = self._sample_category(rng, taste)
            for j in range(session_len):
                if j > 0:
                    t += max(1, int(rng.lognormvariate(3.5, 1.2)))  # seconds to minutes
                    if rng.random() < 0.6:  # browsing jumps between categories
                        focus = self._sample_category(rng, taste)
                    if rng.random() < 0.2:  # ... and explores outside the user's taste
                        focus = rng.choice(cats)
                if favourite_brands and rng.random() < 0.25:
                    pool = self._by_brand.get(rng.choice(favourite_brands)) or self._by_category[focus]
                else:
                    pool = self._by_category[focus]
                i = pool[min(len(pool) - 1, int(rng.paretovariate(1.3)) - 1)]  # popular items first
                action = rng.choices([a for a, _ in ACTION_WEIGHTS], [w for _, w in ACTION_WEIGHTS])[0]
                c, b, _ = self._item_meta[i]
                rating = None
                if action == "rate":
                    rating = float(max(1, min(5, round(1 + 4 * taste[c] / max(taste) + rng.gauss(0, 0.7)))))
                if action in ("cart", "purchase", "rate") and b not in favourite_brands:
                    favourite_brands.append(b)
                events.append(
                    RawEvent(
                        user_id=uid,
                        item_id=self._catalog[i].item_id,
                        timestamp=t,
                        action=action,
                        rating=rating,
                        meta={"session": session, "taste": [round(w, 4) for w in taste]},
                    )
                )
        return events

    @staticmethod
    def _normalize(taste: list[float]) -> None:
        s = sum(taste)
        for k in range(len(taste)):
            taste[k] /= s

    @staticmethod
    def _sample_category(rng: random.Random, taste: list[float]) -> int:
        return rng.choices(range(len(taste)), taste)[0]

    def events_by_user(self) -> Iterator[tuple[str, list[RawEvent]]]:
        return self.events_for_users(0, self.cfg.num_users)

    def events_for_users(self, start: int, stop: int) -> Iterator[tuple[str, list[RawEvent]]]:
        """Users [start, stop): lets parallel workers generate disjoint slices of the population."""
        for u in range(start, min(stop, self.cfg.num_users)):
            evs = self.user_events(u)
            self.report.saw("synthetic events", len(evs))
            yield f"user{u:07d}", evs

    def events(self) -> Iterator[RawEvent]:
        for _, evs in self.events_by_user():
            yield from evs

    def explainer(self) -> Explainer:
        return order_dependent_explanation

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["options"] = {k: getattr(self.cfg, k) for k in self.cfg.__dataclass_fields__}
        d["categories"] = self.categories
        return d
