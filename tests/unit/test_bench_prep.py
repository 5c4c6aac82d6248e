"""`seller-dist bench prep`: the generated log has the shape the benchmark promises (exact size,
heavy tail, per-user time order, same bytes for the same seed), and a tiny run measures every
(engine, format, size) with a real peak RSS from the prep process itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from seller_dist.bench import prep as bench_prep
from seller_dist.cli import main


def test_generated_log_is_exact_heavy_tailed_and_deterministic(tmp_path):
    spec = bench_prep.LogSpec(events=50_000, users=5_000, items=1_000, seed=3)
    cols = bench_prep.generate_events(spec)
    assert all(len(c) == 50_000 for c in cols.values())
    per_user = np.bincount(cols["user_id"], minlength=spec.users)
    assert per_user.min() >= 1 and per_user.sum() == 50_000
    assert per_user.max() >= 20 * np.median(per_user)  # a few very active users
    per_item = np.bincount(cols["item_id"], minlength=spec.items)
    assert per_item.max() >= 20 * np.median(per_item)  # popular items
    # the log is in global time order; each user's events in non-decreasing time, some equal
    assert (np.diff(cols["timestamp"]) >= 0).all()
    order = np.argsort(cols["user_id"], kind="stable")
    same_user = np.diff(cols["user_id"][order]) == 0
    gaps = np.diff(cols["timestamp"][order])[same_user]
    assert (gaps >= 0).all() and 0.01 < (gaps == 0).mean() < 0.2
    assert set(np.unique(cols["event_type"])) == set(range(len(bench_prep.ACTIONS)))

    a = bench_prep.ensure_log(spec, tmp_path / "a", ["csv", "parquet"])
    b = bench_prep.ensure_log(spec, tmp_path / "b", ["csv", "parquet"])
    assert a["folder"] != b["folder"]
    for fmt in ("csv", "parquet"):
        assert Path(a["inputs"][fmt]).read_bytes() == Path(b["inputs"][fmt]).read_bytes()
    assert Path(a["items"]).read_bytes() == Path(b["items"]).read_bytes()
    assert a["generated_seconds"] is not None
    assert bench_prep.ensure_log(spec, tmp_path / "a", ["csv"])["generated_seconds"] is None  # cached

    csv_rows = pcsv.read_csv(a["inputs"]["csv"])
    assert csv_rows.column_names == ["user_id", "item_id", "timestamp", "event_type", "rating"]
    assert csv_rows.num_rows == pq.read_metadata(a["inputs"]["parquet"]).num_rows == 50_000
    rated = csv_rows["rating"].drop_null().to_numpy()
    assert 0 < len(rated) < 50_000 // 10 and set(np.unique(rated)) <= {1, 2, 3, 4, 5}
    items = pcsv.read_csv(a["items"])
    assert items.column_names == ["item_id", "title", "category", "brand"] and items.num_rows == 1_000

    split = bench_prep.ensure_log(
        bench_prep.LogSpec(events=50_000, users=5_000, items=1_000, seed=3, files=3), tmp_path, ["csv"]
    )
    parts = sorted(Path(split["folder"]).glob("events-*.csv"))
    assert len(parts) == 3 and sum(pcsv.read_csv(p).num_rows for p in parts) == 50_000
    assert split["inputs"]["csv"].endswith("events-*.csv")


def _run_tiny(tmp_path, capsys, engines: str, formats: str = "csv,parquet") -> dict:
    out = tmp_path / "result.json"
    rc = main(
        ["bench", "prep", "--tiny", "--engines", engines, "--formats", formats]
        + ["--workdir", str(tmp_path / "work"), "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "| target | engine | format | value | result |" in printed
    return json.loads(out.read_text())


@pytest.mark.ray
def test_tiny_local_run_measures_every_size_and_format(tmp_path, capsys):
    result = _run_tiny(tmp_path, capsys, "local")
    rows = [(r["engine"], r["format"], r["events"]) for r in result["results"]]
    assert rows == [(e, f, n) for n in (2000, 8000) for e in ("local",) for f in ("csv", "parquet")]
    for r in result["results"]:
        assert r["exit_code"] == 0 and r["cpus"] == 1
        assert r["driver_peak_reported"] and r["driver_peak_rss_mib"] > 0
        assert r["events_per_s"] > 0 and r["examples"] > 0
        assert 0 <= r["bad_records"] <= 0.01 * r["events"]  # a few duplicate events, counted
    prov = result["provenance"]
    assert prov["machine"]["cpus"] and prov["date"] and "commit" in prov and "tree" in prov
    ratios = result["targets"]["ratios"]
    assert set(ratios["rss_largest_over_smallest"]) == {"local/csv", "local/parquet"}
    assert all(v > 0 for v in ratios["rss_largest_over_smallest"].values())
    assert {c["engine"] for c in result["targets"]["checks"]} == {"local"}


def test_targets_compare_ray_with_local_per_size():
    """The engine=ray run itself is measured by tests/integration/test_prep_ray.py (the worker
    memory test runs bench prep); here the ratios and checks from fabricated rows."""

    def row(engine: str, n: int, eps: float, rss: float) -> dict:
        return {"engine": engine, "format": "csv", "events": n, "exit_code": 0, "events_per_s": eps,
                "events_per_s_per_cpu": eps / (2 if engine == "ray" else 1), "driver_peak_rss_mib": rss}  # fmt: skip

    rows = [row("local", 1000, 100.0, 100.0), row("ray", 1000, 50.0, 200.0),
            row("local", 4000, 100.0, 110.0), row("ray", 4000, 150.0, 300.0)]  # fmt: skip
    t = bench_prep.targets(rows, baseline=10.0)
    assert t["ratios"]["ray_over_local"] == {"csv": {"1000": 0.5, "4000": 1.5}}
    assert t["ratios"]["rss_largest_over_smallest"] == {"local/csv": 1.1, "ray/csv": 1.5}
    checks = {(c["engine"], c["target"].split(" ")[0]): c["pass"] for c in t["checks"]}
    assert checks[("ray", "ray")] and not checks[("ray", "driver")] and checks[("local", "driver")]


def test_set_passes_prep_settings_to_every_run():
    opts = bench_prep.BenchPrepOptions(prep_set=["partition_max_events=5000", "read_part_bytes=65536"])
    cmd = bench_prep.prep_command("ray", "events.csv", "items.csv", "out", opts)
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert "partition_max_events=5000" in sets and "read_part_bytes=65536" in sets
    assert "engine=ray" in sets and "max_history=20" in sets
