"""`max_users`: prep keeps a deterministic subsample of the users (the smallest hash of seed and user
id) with every example of theirs, whatever the read parts or partitions, the same on every rerun and
on both engines (engine=ray in the slow test at the end)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import data_prep.pipeline as pipeline
from data_prep.examples import UserSample, user_rank
from seller_dist.config import ConfigError, PrepConfig, from_dict
from seller_dist.data import shards
from seller_dist.data.schema import SPLITS
from tests.prep_sources import write_events_inputs

COLUMNS = {"user": "uid", "item": "sku", "timestamp": "ts", "action": "type", "rating": None, "text": "note"}


def records(root: Path) -> dict[str, list[dict]]:
    m = json.loads((root / "manifest.json").read_text())
    return {
        split: sorted(
            (
                json.loads(s["json"])
                for info in m["splits"][split]["shards"]
                for s in shards.iter_tar_samples(shards.read_shard_bytes(str(root), info), info["path"])
            ),
            key=lambda r: r["key"],
        )
        for split in SPLITS
    }


def config(tmp_path: Path, name: str, **kw) -> PrepConfig:
    path = write_events_inputs(tmp_path / "raw")["csv"]
    return from_dict(
        PrepConfig,
        {"source": "events", "inputs": {"path": path}, "events_columns": COLUMNS,
         "source_options": {"action_aliases": {"add_to_cart": "cart"}}, "max_history": 4,
         "max_error_rate": 0.2, "output": str(tmp_path / name), **kw},
    )  # fmt: skip


def prep(tmp_path: Path, name: str, **kw) -> tuple[dict, dict[str, list[dict]]]:
    m = pipeline.run_prep(config(tmp_path, name, **kw))
    return m, records(tmp_path / name)


def users_of(recs: dict[str, list[dict]]) -> set[str]:
    return {r["user_id"] for rs in recs.values() for r in rs}


def expected_users(all_users: set[str], n: int, seed: int) -> set[str]:
    return {u for _, u in sorted((user_rank(u, seed), u) for u in all_users)[:n]}


def test_user_sample_keeps_the_n_smallest_whatever_the_order_and_merges_by_parts():
    users = [f"user-{i}" for i in range(500)]
    want = expected_users(set(users), 37, seed=3)
    rng = random.Random(0)
    for _ in range(3):
        stream = users * 2
        rng.shuffle(stream)
        s = UserSample(37, 3)
        s.update(stream)
        assert s.kept() == want
    # per-part samples merged (what engine=ray's driver does) give the same users
    parts = [users[i::7] for i in range(7)]
    merged = UserSample(37, 3)
    for p in parts:
        part = UserSample(37, 3)
        part.update(p)
        merged.update(part.kept())
    assert merged.kept() == want
    assert UserSample(37, 4).update(users) is None and expected_users(set(users), 37, 4) != want
    small = UserSample(900, 3)
    small.update(users)
    assert small.kept() == set(users)  # fewer users than n: every user


def test_max_users_keeps_those_users_whole_and_is_deterministic(tmp_path):
    m_all, all_recs = prep(tmp_path, "all")
    every = users_of(all_recs)
    assert len(every) == m_all["vocab"]["num_users"] == 41
    m, recs = prep(tmp_path, "sub", max_users=10, max_users_seed=7)
    kept = users_of(recs)
    assert kept == expected_users(every, 10, 7) and len(kept) == 10
    assert m["vocab"]["num_users"] == 10 == m["stats"]["users_with_examples"]
    assert m["prep"]["max_users"] == 10 and m["prep"]["max_users_seed"] == 7
    # every example of a kept user (train, valid and test), and nothing else
    for split in SPLITS:
        assert recs[split] == [r for r in all_recs[split] if r["user_id"] in kept]
    assert all(recs[s] for s in SPLITS)
    # the same users and records however the input is read and partitioned, and on a rerun
    _, again = prep(
        tmp_path, "again", max_users=10, max_users_seed=7, read_part_bytes=2048, spill_partitions=3
    )
    assert again == recs
    _, other = prep(tmp_path, "other", max_users=10, max_users_seed=8)
    assert users_of(other) != kept and len(users_of(other)) == 10
    _, whole = prep(tmp_path, "more", max_users=1000)
    assert whole == all_recs


def test_max_users_config_errors():
    with pytest.raises(ConfigError, match="max_users must be >= 0"):
        from_dict(PrepConfig, {"max_users": -1})
    with pytest.raises(ConfigError, match="source_options.num_users"):
        from_dict(PrepConfig, {"source": "synthetic", "max_users": 5})


@pytest.mark.slow
@pytest.mark.ray
def test_ray_engine_keeps_the_same_users(tmp_path):
    """engine=ray picks its users from the parse tasks' samples: the local engine's users and records."""
    import ray

    from seller_dist.ray_cluster import init_ray

    root = str(Path(__file__).resolve().parents[2])
    init_ray(None, 2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": root}})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_m, ray_recs = prep(
            tmp_path, "ray", max_users=10, max_users_seed=7, engine="ray", read_part_bytes=2048
        )
    finally:
        ray.shutdown()
    local_m, local_recs = prep(tmp_path, "local", max_users=10, max_users_seed=7)
    assert ray_recs == local_recs and len(users_of(ray_recs)) == 10
    assert ray_m["stats"] == local_m["stats"] and ray_m["vocab"] == local_m["vocab"]
