"""Two daily log windows for the warm-start tests (generic `events` source, CSV in a temp folder).

Window 1: users u000-u029, items i000-i039, categories books/games/garden/kitchen.
Window 2 (later timestamps): users u020-u049 (20 new), items i010-i049 (i000-i009 are gone, i040-i049
are new) plus "a-new" (sorts before every old id: new items must still come after the old ones),
and a new category "aquarium" (sorts before "books": attribute value rows must move by value).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from seller_dist.config import PrepConfig

CATEGORIES = ("books", "games", "garden", "kitchen")
BRANDS = ("acme", "globex", "initech")
ACTIONS = ("view", "click", "cart", "purchase")
EVENTS_PER_USER = 10


def write_window(
    folder: Path, users: list[str], items: dict[str, tuple[str, str]], t0: int, seed: int
) -> Path:
    """events.csv + items.csv: each user browses EVENTS_PER_USER items, mostly of one favourite category."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    by_cat: dict[str, list[str]] = {}
    for iid, (cat, _) in sorted(items.items()):
        by_cat.setdefault(cat, []).append(iid)
    ids = sorted(items)
    rows = ["user_id,item_id,timestamp,action"]
    for u in users:
        fav = rng.choice(sorted(by_cat))
        t = t0 + rng.randrange(3600)
        for _ in range(EVENTS_PER_USER):
            pool = by_cat[fav] if rng.random() < 0.7 else ids
            t += rng.randrange(60, 7200)
            rows.append(f"{u},{rng.choice(pool)},{t},{rng.choice(ACTIONS)}")
    (folder / "events.csv").write_text("\n".join(rows) + "\n")
    lines = ["item_id,title,category,brand"]
    for iid, (cat, brand) in sorted(items.items()):
        lines.append(f"{iid},{brand.title()} {cat} thing {iid},{cat},{brand}")
    (folder / "items.csv").write_text("\n".join(lines) + "\n")
    return folder


def window_items(lo: int, hi: int, seed: int) -> dict[str, tuple[str, str]]:
    rng = random.Random(seed)
    return {f"i{i:03d}": (CATEGORIES[i % len(CATEGORIES)], rng.choice(BRANDS)) for i in range(lo, hi)}


def write_windows(tmp: Path) -> tuple[Path, Path]:
    w1_items = window_items(0, 40, 1)
    w1 = write_window(tmp / "raw1", [f"u{u:03d}" for u in range(30)], w1_items, 1_700_000_000, 1)
    w2_items = {k: v for k, v in w1_items.items() if int(k[1:]) >= 10}
    w2_items.update(window_items(40, 50, 2))
    w2_items["i045"] = ("aquarium", "acme")
    w2_items["a-new"] = ("aquarium", "globex")
    w2 = write_window(tmp / "raw2", [f"u{u:03d}" for u in range(20, 50)], w2_items, 1_710_000_000, 2)
    return w1, w2


def prep_window(raw: Path, out: Path, vocab_from: str | None = None) -> dict[str, Any]:
    from data_prep.pipeline import run_prep

    cfg = PrepConfig(
        source="events",
        inputs={"path": str(raw / "events.csv"), "items": str(raw / "items.csv")},
        output=str(out),
        max_history=8,
        vocab_from=vocab_from,
        overwrite=True,
    )
    cfg.validate()
    return run_prep(cfg)
