"""The local engine streams a streaming source: peak memory does not grow with the number of users."""

from __future__ import annotations

import tracemalloc

import pytest

import data_prep.pipeline as pipeline
from seller_dist.config import PrepConfig, from_dict


def _peak(tmp_path, num_users: int) -> int:
    cfg = from_dict(
        PrepConfig,
        {
            "output": str(tmp_path / f"u{num_users}"),
            "max_history": 2,
            "shard_max_records": 200,
            "source_options": {
                "num_users": num_users,
                "num_items": 50,
                "events_per_user_min": 2,
                "events_per_user_max": 3,
            },
        },
    )
    tracemalloc.start()
    try:
        manifest = pipeline.run_prep(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest["vocab"]["num_users"] == num_users
    return peak


@pytest.mark.slow
def test_prep_memory_does_not_grow_with_users(tmp_path):
    _peak(tmp_path, 50)  # warm imports and caches
    small, large = _peak(tmp_path, 300), _peak(tmp_path, 3000)
    assert large < 1.5 * small, (small, large)
