"""`split: source`: the split a dataset comes with (xrec's trn/val/tst.pkl, a split column, global
cut-offs) instead of the per-user time split, with histories strictly before each target and no
held-out pair in any train record. Both engines (engine=ray in the slow test at the end)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import data_prep.pipeline as pipeline
from data_prep.safe_pickle import UnreadablePickleError
from data_prep.sources.events import EventsSource
from data_prep.sources.xrec import XRecSource
from data_prep.sources.yelp import YelpSource
from seller_dist.config import ConfigError, PrepConfig, from_dict
from seller_dist.data import shards
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.data.schema import SPLITS

COLUMNS = ["uid", "iid", "title", "user_summary", "item_summary", "explanation"]


def _pkl(path: Path, pairs: list[tuple[int, int]], as_records: bool = False) -> None:
    rows = [(u, i, f"Shop {i}", "", f"About {i}.", f"Why {u} likes {i}.") for u, i in pairs]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if as_records:  # what forks pickle instead of the DataFrame
        pd.to_pickle(df.to_dict("records"), path)
    else:
        df.to_pickle(path)


def write_scattered_xrec(d: Path, as_records: bool = False) -> Path:
    """The published layout (no Time: the row number across trn, val, tst is the time) with the
    explained pairs scattered as in XRec's real data: tst.pkl pairs inside total_trn.csv with later
    events of the same user, a val.pkl pair in total_trn.csv, a trn.pkl pair in total_tst.csv."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "total_trn.csv").write_text("user,item\n0,10\n1,10\n0,11\n1,12\n0,12\n2,10\n2,11\n")  # rows 1-7
    (d / "total_val.csv").write_text("user,item\n0,13\n1,13\n2,12\n")  # rows 8-10
    (d / "total_tst.csv").write_text("user,item\n0,14\n1,14\n2,13\n")  # rows 11-13
    _pkl(d / "tst.pkl", [(0, 11), (2, 11), (1, 14)], as_records)
    _pkl(d / "val.pkl", [(1, 12), (0, 13)], as_records)
    _pkl(d / "trn.pkl", [(0, 14), (2, 12)], as_records)
    return d


def read_records(root: Path, manifest: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for split in SPLITS:
        recs = []
        for info in manifest["splits"][split]["shards"]:
            for s in shards.iter_tar_samples(shards.read_shard_bytes(str(root), info), info["path"]):
                recs.append(json.loads(s["json"]))
        out[split] = recs
    return out


def examples(recs: list[dict]) -> set[tuple[str, str, int, tuple[str, ...]]]:
    """(user, target item, target time, history items oldest first) of each record."""
    return {
        (r["user_id"], r["item_id"], r["timestamp"], tuple(h["item_id"] for h in r["history"])) for r in recs
    }


def prep(tmp_path: Path, name: str, **kw) -> tuple[dict, dict[str, list[dict]]]:
    cfg = from_dict(PrepConfig, {"output": str(tmp_path / name), "max_history": 20, **kw})
    manifest = pipeline.run_prep(cfg)
    return manifest, read_records(tmp_path / name, manifest)


# the expected dataset of write_scattered_xrec under split=source (user, item, time, history items)
XREC_SOURCE_SPLIT = {
    "test": {  # exactly tst.pkl; a test history holds every earlier event, held-out ones too
        ("0", "11", 3, ("10",)),
        ("2", "11", 7, ("10",)),
        ("1", "14", 12, ("10", "12", "13")),
    },
    "valid": {  # exactly val.pkl; no test event in a valid history (user 0's 11@3 is left out)
        ("1", "12", 4, ("10",)),
        ("0", "13", 8, ("10", "12")),
    },
    "train": {  # trn.pkl pairs and interactions in no pkl (templated); no valid/test event anywhere
        ("0", "12", 5, ("10",)),
        ("0", "14", 11, ("10", "12")),
        ("1", "13", 9, ("10",)),
        ("2", "12", 10, ("10",)),
        ("2", "13", 13, ("10", "12")),
    },
}


@pytest.mark.parametrize("as_records", [False, True], ids=["dataframe", "list-of-dicts"])
def test_xrec_source_split_puts_every_tst_pair_in_test_and_none_in_train(tmp_path, as_records):
    d = write_scattered_xrec(tmp_path / "xrec", as_records)
    manifest, recs = prep(tmp_path, "ds", source="xrec", inputs={"dir": str(d)}, split="source")
    assert {s: examples(r) for s, r in recs.items()} == XREC_SOURCE_SPLIT
    tst = {("0", "11"), ("2", "11"), ("1", "14")}
    val = {("1", "12"), ("0", "13")}
    assert {(r["user_id"], r["item_id"]) for r in recs["test"]} == tst
    assert {(r["user_id"], r["item_id"]) for r in recs["valid"]} == val
    for r in recs["train"]:  # no held-out pair in a train record, as target or in its history
        assert not {(r["user_id"], h["item_id"]) for h in r["history"]} & (tst | val)
        assert (r["user_id"], r["item_id"]) not in tst | val
    for split, rs in recs.items():
        for r in rs:
            assert all(h["timestamp"] < r["timestamp"] for h in r["history"])  # strictly before
            assert r["split"] == split and r["key"].startswith(split + "-")
    assert {r["explanation"] for r in recs["test"]} == {
        "Why 0 likes 11.",
        "Why 2 likes 11.",
        "Why 1 likes 14.",
    }
    assert all(r["explanation_source"] == "reference" for r in recs["test"] + recs["valid"])
    assert manifest["prep"]["split"] == "source"
    assert manifest["prep"]["split_rule"].startswith("xrec's published split")
    assert manifest["stats"]["held_out_without_history"] == {"test": 0, "valid": 0}


def test_xrec_time_split_is_still_the_default(tmp_path):
    d = write_scattered_xrec(tmp_path / "xrec")
    manifest, recs = prep(tmp_path, "ds", source="xrec", inputs={"dir": str(d)})
    # each user's last event is test, whatever tst.pkl says
    assert {(r["user_id"], r["item_id"]) for r in recs["test"]} == {("0", "14"), ("1", "14"), ("2", "13")}
    assert manifest["prep"]["split"] == "time" and "held_out_without_history" not in manifest["stats"]


def test_ties_are_not_history_and_a_first_event_held_out_pair_is_counted(tmp_path):
    """With a Time column: an event at the target's own second is not its history (whatever the input
    order); a tst.pkl pair that is its user's first event has no history and is counted, not written."""
    d = tmp_path / "xrec"
    d.mkdir()
    (d / "total_trn.csv").write_text("user,item,Time\n5,1,100\n5,3,200\n5,2,200\n6,1,50\n6,2,60\n")
    (d / "total_tst.csv").write_text("user,item,Time\n5,4,300\n")
    _pkl(d / "tst.pkl", [(5, 2), (6, 1)])
    _pkl(d / "val.pkl", [(5, 4)])
    manifest, recs = prep(tmp_path, "ds", source="xrec", inputs={"dir": str(d)}, split="source")
    assert {s: examples(r) for s, r in recs.items()} == {
        "test": {("5", "2", 200, ("1",))},  # 3@200 comes first in the csv but is not earlier
        "valid": {("5", "4", 300, ("1", "3"))},  # the test event 2@200 is left out
        # user 6's 2@60 would have only the test event 1@50 before it: no history, no example
        "train": {("5", "3", 200, ("1",))},
    }
    assert manifest["stats"]["held_out_without_history"] == {"test": 1, "valid": 0}


def test_xrec_lfs_pointer_is_a_clear_error(tmp_path):
    d = write_scattered_xrec(tmp_path / "xrec")
    (d / "tst.pkl").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:eed8f2a37709de31\nsize 2320746\n"
    )
    src = XRecSource({"dir": str(d)}, {}, BadRecordReport())
    with pytest.raises(
        UnreadablePickleError, match=r"tst.pkl: is a Git LFS pointer, not the pickle: run `git lfs pull`"
    ):
        list(src.items())


def test_events_split_column_and_bad_split_values(tmp_path):
    log = tmp_path / "events.csv"
    log.write_text(
        "uid,sku,ts,part\n"
        "a,1,10,train\na,2,20,TRN\na,3,30,validation\na,4,40,tst\n"
        "b,1,10,train\nb,2,20,test\nb,3,30,train\nb,4,40,holdout\nb,5,50,\n"
    )
    cols = {"user": "uid", "item": "sku", "timestamp": "ts", "action": None, "rating": None, "text": None}
    manifest, recs = prep(tmp_path, "ds", source="events", inputs={"path": str(log)}, events_columns=cols,
                          split="source", split_column="part", max_error_rate=0.5)  # fmt: skip
    assert {s: examples(r) for s, r in recs.items()} == {
        "train": {("a", "2", 20, ("1",)), ("b", "3", 30, ("1",))},  # b's test event 2@20 left out
        "valid": {("a", "3", 30, ("1", "2"))},
        "test": {("a", "4", 40, ("1", "2", "3")), ("b", "2", 20, ("1",))},
    }
    rep = json.loads((tmp_path / "ds" / "prep_report.json").read_text())
    assert rep["bad_by_reason"] == {
        "part: expected a split: train, valid or test (also trn/val/tst, validation, dev)": 1,
        "part: missing split": 1,
    }
    assert manifest["prep"]["split_column"] == "part"
    src = EventsSource(
        {"path": str(log)}, {"columns": cols, "split_column": "missing_col"}, BadRecordReport()
    )
    with pytest.raises(ValueError, match="missing_col"):
        list(src.events())


def test_split_cutoffs_split_by_global_time(tmp_path):
    log = tmp_path / "events.jsonl"
    rows = [("a", 1, "2021-01-01"), ("a", 2, "2021-06-01"), ("a", 3, "2021-09-01"), ("a", 4, "2022-09-01"),
            ("b", 1, "2021-08-11"), ("b", 2, "2022-07-16"), ("b", 3, "2022-07-17")]  # fmt: skip
    log.write_text(
        "".join(json.dumps({"uid": u, "sku": i, "ts": t + "T00:00:00Z"}) + "\n" for u, i, t in rows)
    )
    cols = {"user": "uid", "item": "sku", "timestamp": "ts", "action": None, "rating": None, "text": None}
    manifest, recs = prep(tmp_path, "ds", source="events", inputs={"path": str(log)}, events_columns=cols,
                          split="source", split_cutoffs=["2021-08-11", 1658016000000])  # fmt: skip
    assert {s: examples(r) for s, r in recs.items()} == {
        "train": {("a", "2", 1622505600, ("1",))},
        "valid": {("a", "3", 1630454400, ("1", "2")), ("b", "2", 1657929600, ("1",))},
        "test": {("a", "4", 1661990400, ("1", "2", "3")), ("b", "3", 1658016000, ("1", "2"))},
    }
    # b's first event falls on VALID_FROM itself: valid, but with no history it is no example
    assert manifest["stats"]["held_out_without_history"] == {"test": 0, "valid": 1}
    assert manifest["prep"]["split_cutoffs"] == [1628640000, 1658016000]


def test_yelp_split_column(tmp_path):
    reviews = tmp_path / "review.json"
    recs = [
        ("u", "b1", "2020-01-01", "trn"),
        ("u", "b2", "2020-02-01", "val"),
        ("u", "b3", "2020-03-01", "tst"),
    ]
    reviews.write_text("".join(json.dumps({"review_id": f"r{n}", "user_id": u, "business_id": b, "stars": 4,
                                           "text": f"nice {n}", "date": t, "fold": s}) + "\n"
                               for n, (u, b, t, s) in enumerate(recs)))  # fmt: skip
    events = list(YelpSource({"review": str(reviews)}, {"split_column": "fold"}, BadRecordReport()).events())
    assert [(e.item_id, e.split) for e in events] == [("b1", "train"), ("b2", "valid"), ("b3", "test")]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"source": "yelp", "split": "source"},
         "split: source: source yelp publishes no split; set split_column (a field holding train/valid/test) "
         "or split_cutoffs: [VALID_FROM, TEST_FROM], or use split: time"),
        ({"source": "synthetic", "split": "source"},
         "split: source: source synthetic publishes no split; set split_cutoffs: [VALID_FROM, TEST_FROM], "
         "or use split: time"),
        ({"source": "recbole", "split": "source", "split_column": "fold"},
         "split_column: source recbole has no split column; use split_cutoffs: [VALID_FROM, TEST_FROM] or "
         "split: time"),
        ({"source": "events", "split_column": "fold"},
         "split_column is set but split is 'time': set split: source to use it"),
        ({"source": "xrec", "split": "source", "split_cutoffs": [1, 2]},
         "split: source: xrec publishes its own split (trn/val/tst.pkl); remove split_column / split_cutoffs"),
        ({"source": "events", "split": "source", "split_cutoffs": [5]},
         "split_cutoffs: expected [VALID_FROM, TEST_FROM] (two timestamps), got [5]"),
        ({"source": "events", "split": "source", "split_cutoffs": [20, 10]},
         "split_cutoffs: VALID_FROM 20 is after TEST_FROM 10"),
        ({"source": "events", "split": "source", "split_cutoffs": ["2021-08-11", "soon"]},
         "split_cutoffs[1]: 'soon' is not epoch seconds or an ISO-8601 date ('2021-08-11', "
         "'2021-08-11T01:16:54Z')"),
        ({"source": "events", "split": "source", "split_column": "f", "split_cutoffs": [1, 2]},
         "split: source takes split_column OR split_cutoffs, not both: remove one"),
    ],
)  # fmt: skip
def test_split_config_errors_are_one_line_and_name_the_source(kw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(PrepConfig, kw)
    assert str(err.value) == message


@pytest.mark.slow
@pytest.mark.ray
def test_ray_engine_honours_the_source_split(tmp_path):
    """engine=ray cuts with the same code: the same records as the local engine."""
    import ray

    from seller_dist.ray_cluster import init_ray

    d = write_scattered_xrec(tmp_path / "xrec")
    root = str(Path(__file__).resolve().parents[2])
    init_ray(None, 2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": root}})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        base = {"source": "xrec", "inputs": {"dir": str(d)}, "split": "source", "max_history": 20}
        ray_m = pipeline.run_prep(
            from_dict(PrepConfig, {**base, "output": str(tmp_path / "ray"), "engine": "ray"})
        )
    finally:
        ray.shutdown()
    local_m = pipeline.run_prep(from_dict(PrepConfig, {**base, "output": str(tmp_path / "local")}))
    ray_recs = read_records(tmp_path / "ray", ray_m)
    assert {s: examples(r) for s, r in ray_recs.items()} == XREC_SOURCE_SPLIT
    local_recs = read_records(tmp_path / "local", local_m)
    assert {s: sorted(map(json.dumps, r)) for s, r in ray_recs.items()} == {
        s: sorted(map(json.dumps, r)) for s, r in local_recs.items()
    }
    assert ray_m["stats"] == local_m["stats"] and ray_m["prep"]["split"] == "source"


def test_examples_per_user_keeps_the_last_train_targets_and_every_held_out_one():
    from data_prep.examples import Catalog, CutParams
    from data_prep.sources.base import RawEvent, RawItem
    from tests.prep_sources import cut_user_examples

    evs = [RawEvent("u", f"i{n}", 10 * n, "review", text=f"t{n}", split=s)
           for n, s in enumerate(["train", "test", "train", "valid", "train", "train"])]  # fmt: skip
    cat = Catalog.build([RawItem(f"i{n}") for n in range(6)])
    params = CutParams(max_history=3, examples_per_user=1, split="source")
    recs = cut_user_examples("u", evs, cat, params, BadRecordReport())
    assert [(r.split, r.item_id, [h.item_id for h in r.history]) for r in recs] == [
        ("test", "i1", ["i0"]),
        ("valid", "i3", ["i0", "i2"]),
        ("train", "i5", ["i0", "i2", "i4"]),
    ]
