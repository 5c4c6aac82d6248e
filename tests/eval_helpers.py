"""Shared by the evaluation tests: one all-MiniLM-L6-v2 encoder per test process (a few seconds to
load), so every test file that needs it pays once."""

from __future__ import annotations

from functools import lru_cache

from seller_dist.eval.encoder import TextEncoder


@lru_cache(maxsize=1)
def shared_encoder() -> TextEncoder:
    return TextEncoder()
