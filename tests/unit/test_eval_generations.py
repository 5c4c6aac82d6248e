"""The generations JSONL contract: round trip, and bad lines named by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seller_dist.data.bad_records import BadRecordReport, TooManyBadRecords
from seller_dist.eval.generations import Generation, SupportingEvent, read_generations, write_generations


def _gen(key: str, **kw) -> Generation:
    base = dict(
        key=key,
        user_id="u1",
        item_id="item7",
        reference="Recommended because you just bought Café 🍰 Kettle 101.",
        generated="you bought 我的 kettle",
        supporting_events=[
            SupportingEvent(0, "item3", "Café 🍰 Kettle 101", 0.75),
            SupportingEvent(2, "item1", "", 0.25),
        ],
        meta={"cited_item_id": "item3", "cited_offset": 0, "taste": [0.5, 0.5]},
        system="seller",
    )
    return Generation(**{**base, **kw})


def test_round_trip(tmp_path: Path):
    gens = [_gen("a"), _gen("b", generated="", supporting_events=[], meta={})]
    path = str(tmp_path / "gens.jsonl")
    assert write_generations(path, gens) == 2
    assert read_generations(path) == gens
    assert gens[0].top_event() == SupportingEvent(0, "item3", "Café 🍰 Kettle 101", 0.75)
    assert gens[1].top_event() is None


def _write_lines(tmp_path: Path, lines: list[str]) -> str:
    p = tmp_path / "gens.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


@pytest.mark.parametrize(
    "bad,field",
    [
        ("{not json", "json"),
        (
            json.dumps({k: v for k, v in json.loads(_gen("x").to_json()).items() if k != "generated"}),
            "generated",
        ),
        (_gen("x").to_json().replace('"weight": 0.75', '"weight": "high"'), "supporting_events[0].weight"),
        (_gen("x").to_json().replace('"offset": 2', '"offset": -1'), "supporting_events[1].offset"),
        (_gen("x").to_json().replace('"system": "seller"', '"system": 3'), "system"),
        (_gen("x").to_json()[:-1] + ', "extra": 1}', "extra"),
        (_gen("a").to_json(), "key"),  # duplicate of line 1
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path: Path, bad: str, field: str):
    path = _write_lines(tmp_path, [_gen("a").to_json(), bad, _gen("c").to_json()])
    with pytest.raises(TooManyBadRecords) as e:
        read_generations(path)
    assert f"{path}: line 2: field '{field}'" in str(e.value)
    assert "1 of 3 lines" in str(e.value)


def test_bad_lines_below_the_error_rate_are_skipped_and_counted(tmp_path: Path):
    path = _write_lines(tmp_path, [_gen("a").to_json(), "[1, 2]", _gen("c").to_json(), ""])
    report = BadRecordReport()
    gens = read_generations(path, max_error_rate=0.5, report=report)
    assert [g.key for g in gens] == ["a", "c"]
    assert report.total_bad == 1 and report.total_seen == 3
    assert report.samples[0]["record"] == 2 and report.samples[0]["field"] == "json"


def test_missing_and_empty_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="generations file .*nope.jsonl does not exist"):
        read_generations(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no generations in the file"):
        read_generations(str(tmp_path / "empty.jsonl"))
