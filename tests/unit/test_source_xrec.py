"""XRec converter and the allow-listed DataFrame unpickler it reads tst.pkl with."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pandas as pd
import pytest

from data_prep.pipeline import run_prep
from data_prep.safe_pickle import UnsafePickleError, load_table, loads_table
from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.xrec import XRecSource
from seller_dist.config import PrepConfig
from seller_dist.data.bad_records import BadRecordReport
from tests.source_roundtrip import prep_round_trip, read_dataset

COLUMNS = ["uid", "iid", "title", "user_summary", "item_summary", "explanation"]


class RunsCode:
    """What a malicious pickle looks like: unpickling calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def write_xrec_dir(d: Path) -> Path:
    """A small XRec data folder in the published layout (user,item csv without Time; pickled frames)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "total_trn.csv").write_text("user,item\n0,10\n1,10\n0,11\n1,12\n")
    (d / "total_val.csv").write_text("user,item\n0,12\n1,x\n")
    (d / "total_tst.csv").write_text("user,item\n0,13\n1,11\n2\n")
    _frame(
        [
            (
                0,
                13,
                "Blue Bottle",
                "Likes coffee.",
                "A coffee shop.",
                "You would enjoy its pour-over coffee.",
            ),
            (1, 11, "Tea House", "Likes tea.", "A tea room.", "Its quiet room suits your reading habit."),
            (2, 10, "Cafe", "New user.", "A cafe.", "  "),  # empty explanation: bad
            (5, 99, "Ghost", "?", "?", "This pair is in no csv."),
        ]
    ).to_pickle(d / "tst.pkl")
    _frame([(0, 12, "Bakery", "Likes bread.", "Fresh bread.", "Fresh bread near your office.")]).to_pickle(
        d / "trn.pkl"
    )
    return d


def test_xrec_events_items_and_explanations(tmp_path):
    d = write_xrec_dir(tmp_path / "yelp")
    report = BadRecordReport(max_samples=50)
    src = XRecSource({"dir": str(d)}, {}, report)
    items = list(src.items())
    events = list(src.events())
    assert items == [
        RawItem("12", "Bakery", {}, "Fresh bread."),  # trn.pkl is read before tst.pkl
        RawItem("13", "Blue Bottle", {}, "A coffee shop."),
        RawItem("11", "Tea House", {}, "A tea room."),
        RawItem("99", "Ghost", {}, "?"),
    ]
    # no Time column: the row number across trn, val, tst is the timestamp; the pkl file is the split
    assert events == [
        RawEvent("0", "10", 1, "review"),
        RawEvent("1", "10", 2, "review"),
        RawEvent("0", "11", 3, "review"),
        RawEvent("1", "12", 4, "review"),
        RawEvent("0", "12", 5, "review", text="Fresh bread near your office.", split="train"),
        RawEvent("0", "13", 7, "review", text="You would enjoy its pour-over coffee.", split="test"),
        RawEvent("1", "11", 8, "review", text="Its quiet room suits your reading habit.", split="test"),
    ]
    assert dict(report.bad) == {
        "explanation: empty": 1,
        "item: expected an integer id": 1,
        "line: expected 2 columns, got 1": 1,
        "uid,iid: explained pair is in no total_*.csv": 1,
    }
    where = [(Path(s["file"]).name, s["record"], s["field"]) for s in report.samples]
    assert where == [
        ("tst.pkl", "row 2", "explanation"),
        ("total_val.csv", 3, "item"),
        ("total_tst.csv", 4, "line"),
        ("tst.pkl", "row 3", "uid,iid"),
    ]
    assert report.seen[str(d / "tst.pkl")] == 4 and report.seen[str(d / "total_trn.csv")] == 4


def test_xrec_time_column_is_used_when_present(tmp_path):
    d = write_xrec_dir(tmp_path / "x")
    (d / "total_trn.csv").write_text("user,item,Time\n0,10,1700000000000\n0,11,1700000100\n")
    (d / "total_val.csv").unlink()
    (d / "total_tst.csv").write_text("user,item,Time\n0,13,1700000200\n")
    src = XRecSource({"dir": str(d)}, {"action": "purchase"}, BadRecordReport())
    assert [(e.item_id, e.timestamp, e.action) for e in src.events()] == [
        ("10", 1700000000, "purchase"),
        ("11", 1700000100, "purchase"),
        ("13", 1700000200, "purchase"),
    ]


def _clean_tst_pkl(d: Path) -> None:
    """tst.pkl with only good rows whose pairs are in the csv files, so the csv alone decides `bad`."""
    _frame(
        [
            (
                0,
                13,
                "Blue Bottle",
                "Likes coffee.",
                "A coffee shop.",
                "You would enjoy its pour-over coffee.",
            ),
            (1, 11, "Tea House", "Likes tea.", "A tea room.", "Its quiet room suits your reading habit."),
        ]
    ).to_pickle(d / "tst.pkl")


def test_xrec_time_column_variants_convert_with_no_bad_records(tmp_path):
    d = write_xrec_dir(tmp_path / "x")
    _clean_tst_pkl(d)
    (d / "total_trn.csv").write_text(
        "user,item,Time\n"
        "0,10,1449273600\n"  # epoch seconds
        "0,11,1449273600000\n"  # epoch ms
        "0,12,1449273600.0\n"
        "1,10,2015-12-05\n"  # ISO date: UTC midnight
        "1,11,2015-12-05 10:11:12\n"
        "1,12,2015-12-05T10:11:12Z\n"
        "2,10,2015-12-05T12:11:12+02:00\n"
        '2,11,"12 5, 2015"\n'  # Amazon reviewTime: month day, year
        '2,12,"01 19, 2014"\n'
        '2,13," 1 9, 2014 "\n'
    )
    (d / "total_val.csv").unlink()
    (d / "total_tst.csv").write_text("user,item,Time\n0,13,2015-12-06\n1,11,1449360000\n")
    report = BadRecordReport()
    events = list(XRecSource({"dir": str(d)}, {}, report).events())
    assert dict(report.bad) == {}
    assert [(e.user_id, e.item_id, e.timestamp) for e in events] == [
        ("0", "10", 1449273600),
        ("0", "11", 1449273600),
        ("0", "12", 1449273600),
        ("1", "10", 1449273600),
        ("1", "11", 1449310272),
        ("1", "12", 1449310272),
        ("2", "10", 1449310272),
        ("2", "11", 1449273600),
        ("2", "12", 1390089600),  # 2014-01-19 00:00:00 UTC
        ("2", "13", 1389225600),  # 2014-01-09
        ("0", "13", 1449360000),
        ("1", "11", 1449360000),
    ]


@pytest.mark.parametrize(
    "cell",
    ["soon", "13 5, 2015", "12/05/2015", "2015-02-30", "05 12 2015", "nan", "1e400", "2015-12-05T25:00"],
)
def test_xrec_unreadable_time_is_a_value_free_bad_record(tmp_path, cell):
    d = write_xrec_dir(tmp_path / "x")
    _frame([(0, 10, "Cafe", "", "", "Near your office.")]).to_pickle(d / "tst.pkl")
    (d / "trn.pkl").unlink()
    (d / "total_trn.csv").write_text(f'user,item,Time\n0,10,1449273600\n0,11,"{cell}"\n')
    (d / "total_val.csv").unlink()
    (d / "total_tst.csv").write_text("user,item,Time\n0,13,-5\n1,11,\n")
    report = BadRecordReport()
    events = list(XRecSource({"dir": str(d)}, {}, report).events())
    assert [(e.item_id, e.timestamp) for e in events] == [("10", 1449273600)]
    assert dict(report.bad) == {
        "Time: expected epoch seconds/ms, an ISO-8601 date or 'M D, YYYY'": 1,
        "Time: negative timestamp": 1,
        "Time: missing": 1,
    }
    assert all(cell not in s["reason"] for s in report.samples)


def test_dataframe_pickles_round_trip_through_the_allow_list(tmp_path):
    df = pd.DataFrame(
        {
            "uid": [1, 2, 3],
            "iid": [7, 8, 9],
            "title": ["a", "b", None],
            "score": [0.5, 1.5, float("nan")],
            "ok": [True, False, True],
            "obj": pd.Series(["x", 1, None], dtype=object),
        }
    )
    for protocol in (2, 3, 4, 5):
        pd.testing.assert_frame_equal(loads_table(pickle.dumps(df, protocol=protocol), "mem"), df)
    df.to_pickle(tmp_path / "tst.pkl")
    pd.testing.assert_frame_equal(load_table(str(tmp_path / "tst.pkl")), df)
    py = df.astype({"title": pd.StringDtype("python")})
    pd.testing.assert_frame_equal(loads_table(pickle.dumps(py), "mem"), py)


@pytest.mark.parametrize("where", ["top", "cell"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = RunsCode(marker) if where == "top" else pd.DataFrame({"uid": [1], "x": [RunsCode(marker)]})
    path = tmp_path / "tst.pkl"
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(UnsafePickleError) as err:
        load_table(str(path))
    assert str(err.value).startswith(f"{path}: refused to unpickle global 'posix.system'")
    assert not marker.exists()


def test_xrec_refuses_a_malicious_tst_pkl(tmp_path):
    d = write_xrec_dir(tmp_path / "x")
    marker = tmp_path / "pwned"
    (d / "tst.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    src = XRecSource({"dir": str(d)}, {}, BadRecordReport())
    with pytest.raises(UnsafePickleError, match=r"tst.pkl: refused to unpickle global 'posix.system'"):
        list(src.items())
    assert not marker.exists()


def test_not_a_dataframe_and_garbage_are_clear_errors(tmp_path):
    with pytest.raises(
        pickle.UnpicklingError,
        match="mem: expected a pickled DataFrame, list of row dicts or dict of column lists, got dict",
    ):
        loads_table(pickle.dumps({"a": 1}), "mem")
    with pytest.raises(pickle.UnpicklingError, match="mem: not a readable pickle"):
        loads_table(pickle.dumps(pd.DataFrame({"a": [1]}))[:40], "mem")
    with pytest.raises(
        FileNotFoundError, match=r"none of \['total_trn.csv', 'total_val.csv', 'total_tst.csv'\]"
    ):
        XRecSource({"dir": str(tmp_path)}, {}, BadRecordReport())
    (tmp_path / "total_tst.csv").write_text("user,item\n0,1\n")
    with pytest.raises(FileNotFoundError, match=r"tst.pkl not found"):
        XRecSource({"dir": str(tmp_path)}, {}, BadRecordReport())


def test_xrec_prep_round_trip(tmp_path):
    d = write_xrec_dir(tmp_path / "xrec")
    out = prep_round_trip(tmp_path, "xrec", {"dir": str(d)}, max_error_rate=0.9)
    # user 0: 4 events -> 3 targets, user 1: 3 events -> 2 targets (explained ones keep their text)
    assert out["records"] == 5 and out["templated"]


LFS_POINTER_TEXT = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345678\n"
)


def test_a_clone_without_git_lfs_says_which_file_to_pull(tmp_path):
    """XRec's amazon and google folders keep total_trn.csv (and trn/val.pkl) in Git LFS: a clone
    without git-lfs holds 130-byte pointer files instead. The csv pointer is named as such, not
    reported as a bad header; a copy that lacks total_trn.csv says so in the reason of every explained
    pair that only that file would have contained."""
    from data_prep.sources import SourceConfigError

    d = write_xrec_dir(tmp_path / "amazon")
    (d / "total_trn.csv").write_text(LFS_POINTER_TEXT)
    src = XRecSource({"dir": str(d)}, {}, BadRecordReport())
    with pytest.raises(
        SourceConfigError,
        match=r"amazon/total_trn.csv: is a Git LFS pointer, not the csv: run `git lfs pull`",
    ):
        list(src.events())

    (d / "total_trn.csv").unlink()
    _frame([(1, 12, "Bakery", "Likes bread.", "Fresh bread.", "Fresh bread.")]).to_pickle(d / "trn.pkl")
    report = BadRecordReport(max_samples=50)
    src = XRecSource({"dir": str(d)}, {}, report)
    list(src.items())
    list(src.events())
    reason = f"explained pair is in no total_*.csv (total_trn.csv not in {d})"
    assert report.bad[f"uid,iid: {reason}"] == 2  # (5, 99) as before, and (1, 12): only total_trn.csv has it


def test_train_on_test_users_trains_on_real_explanations_of_half_the_users_and_tests_on_the_others(tmp_path):
    """The labelled protocol for a release without trn.pkl: with template_missing_text false only the
    explained pairs are targets (the others are history, not bad records), and train_on_test_users
    moves the tst.pkl pairs of a hashed share of the users to train, user-disjoint from the test."""
    from data_prep.examples import user_rank
    from data_prep.sources.xrec import TEST_USERS_SEED

    d = tmp_path / "yelp"
    d.mkdir()
    users = range(40)
    (d / "total_trn.csv").write_text(
        "user,item\n" + "".join(f"{u},{100 + u}\n{u},{200 + u}\n" for u in users)
    )
    (d / "total_tst.csv").write_text("user,item\n" + "".join(f"{u},{300 + u}\n" for u in users))
    _frame(
        [
            (u, 300 + u, f"Place {u}", "Likes places.", "A place.", f"You would enjoy place {u}.")
            for u in users
        ]
    ).to_pickle(d / "tst.pkl")
    out = tmp_path / "prep"
    options = {"template_missing_text": False, "train_on_test_users": 0.5}
    manifest = run_prep(
        PrepConfig(
            source="xrec", inputs={"dir": str(d)}, source_options=options, split="source", output=str(out)
        )
    )
    _, records, _ = read_dataset(str(out))
    assert manifest["stats"]["bad_records"] == 0
    assert all(r["explanation"] == f"You would enjoy place {r['user_id']}." for r in records)
    by_split: dict[str, set[str]] = {}
    for r in records:
        by_split.setdefault(r["split"], set()).add(r["user_id"])
    want_train = {str(u) for u in users if user_rank(str(u), TEST_USERS_SEED) < 2**63}
    assert by_split["train"] == want_train and by_split["test"] == {str(u) for u in users} - want_train
    assert 10 < len(want_train) < 30 and "valid" not in by_split
