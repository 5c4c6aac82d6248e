"""Shared by the evaluation tests: one all-MiniLM-L6-v2 encoder per test process (a few seconds to
load), so every test file that needs it pays once."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from seller_dist.eval.encoder import TextEncoder


@lru_cache(maxsize=1)
def shared_encoder() -> TextEncoder:
    return TextEncoder()


# ------------------------------------------------------------------ real and templated references
CATEGORIES = ("kettle", "lamp", "chair", "kayak")
BRANDS = ("Nimbus", "Vopa", "Oriel")


def item_title(i: int) -> str:
    return f"{BRANDS[i % 3]} {CATEGORIES[i % 4].title()} {100 + i}"


def write_mixed_events(folder: Path, users: int = 48, with_text: bool = True) -> dict[str, str]:
    """An events log (JSONL) and item table where some targets carry a real review and the others do
    not: prep gives `review` references to the first and `template` ones to the rest. Every user's
    last two events (test and valid targets) have a review for users with an even number, none for
    the odd ones; the earlier events are mixed too. Returns the prep inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "item_id": f"i{i}",
                    "title": item_title(i),
                    "category": CATEGORIES[i % 4],
                    "brand": BRANDS[i % 3],
                }
            )
            + "\n"
            for i in range(40)
        )
    )
    lines = []
    for u in range(users):
        for k in range(7):
            i = (u * 5 + k * 3) % 40
            reviewed = (u % 2 == 0) if k >= 5 else (k + u) % 3 == 0
            text = (
                f"The {item_title(i)} is a {CATEGORIES[i % 4]} from {BRANDS[i % 3]} that I use every day."
                if reviewed and with_text
                else None
            )
            lines.append(
                json.dumps(
                    {"user_id": f"u{u}", "item_id": f"i{i}", "timestamp": 1_700_000_000 + u * 1000 + k * 60}
                    | {"action": "purchase", "text": text}
                )
            )
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    return {"path": str(folder / "events.jsonl"), "items": str(folder / "items.jsonl")}


def prep_mixed(output: Path, with_text: bool = True) -> str:
    """Prepare the mixed log (docs/data.md, events source); returns the dataset root."""
    from data_prep.pipeline import run_prep
    from seller_dist.config import EventsColumnsConfig, PrepConfig

    inputs = write_mixed_events(output.parent / f"{output.name}-raw", with_text=with_text)
    cfg = PrepConfig(
        source="events",
        inputs=inputs,
        events_columns=EventsColumnsConfig(text="text" if with_text else None),
        output=str(output),
        max_history=6,
        overwrite=True,
    )
    cfg.validate()
    run_prep(cfg)
    return str(output)
