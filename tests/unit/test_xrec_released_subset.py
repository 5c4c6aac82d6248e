"""tools/xrec_released_subset.py: XRec's released predictions matched to our cells by reference text."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tools.xrec_released_subset import RELEASED, matched_files


def write_cell(grid: Path, system: str, seed: int, rows: list[tuple[str, str, str]]) -> None:
    d = grid / "cells" / system / f"seed-{seed}" / "eval"
    d.mkdir(parents=True)
    lines = [json.dumps({"key": k, "generated": g, "reference": r}) for k, g, r in rows]
    (d / "generations.jsonl").write_text("".join(x + "\n" for x in lines))


def release(tmp_path: Path) -> Path:
    d = tmp_path / "yelp"
    d.mkdir()
    refs = ["Great tacos, friendly staff.", "Quiet place to read.", "Loud but fun."]
    preds = ["You will like the tacos.", "A calm cafe.", "Lively bar."]
    (d / "tst_ref.pkl").write_bytes(pickle.dumps(refs))
    (d / "tst_pred.pkl").write_bytes(pickle.dumps(preds))
    return d


def test_matches_by_folded_reference_and_keeps_our_order(tmp_path: Path) -> None:
    xrec, grid = release(tmp_path), tmp_path / "grid"
    # case and punctuation differ from the release; "u9" has no released counterpart and is left out
    rows = [
        ("u2", "a", "loud, but FUN"),
        ("u9", "b", "not released"),
        ("u0", "c", "great tacos friendly staff"),
    ]
    write_cell(grid, "seller-chat", 0, rows)
    write_cell(grid, "zero-shot", 0, [(k, g.upper(), r) for k, g, r in rows])
    files = matched_files(str(xrec), str(grid), tmp_path / "out")
    read = {k: [json.loads(x) for x in f.read_text().splitlines()] for k, f in files.items()}
    assert set(read) == {("seller-chat", "seed-0"), ("zero-shot", "seed-0"), (RELEASED, "")}
    assert [r["generated"] for r in read[("seller-chat", "seed-0")]] == ["a", "c"]
    assert [r["generated"] for r in read[("zero-shot", "seed-0")]] == ["A", "C"]
    # XRec's own prediction and reference for the same two examples, in our order
    assert read[(RELEASED, "")] == [
        {"generated": "Lively bar.", "reference": "Loud but fun."},
        {"generated": "You will like the tacos.", "reference": "Great tacos, friendly staff."},
    ]


def test_cells_on_different_examples_are_refused(tmp_path: Path) -> None:
    xrec, grid = release(tmp_path), tmp_path / "grid"
    write_cell(grid, "bag-chat", 0, [("u0", "a", "Great tacos, friendly staff.")])
    write_cell(grid, "seller-chat", 0, [("u1", "b", "Quiet place to read.")])
    with pytest.raises(SystemExit, match="seller-chat/seed-0/eval/generations.jsonl: not the same examples"):
        matched_files(str(xrec), str(grid), tmp_path / "out")
    with pytest.raises(SystemExit, match="no cells/"):
        matched_files(str(xrec), str(tmp_path / "empty"), tmp_path / "out2")
