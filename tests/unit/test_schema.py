"""Record schema v1: valid records round-trip; each violation names the field, the record and the file."""

from __future__ import annotations

import copy

import pytest

from seller_dist.data.schema import (
    ExampleRecord,
    HistoryEvent,
    RecordError,
    normalize_timestamp,
    validate_example,
)


def _record() -> ExampleRecord:
    return ExampleRecord(
        key="train-abc",
        user_id="u1",
        item_id="i9",
        item_idx=9,
        timestamp=1_700_000_100,
        history=[
            HistoryEvent("i1", 1, 1_700_000_000, "view", None, "Red Kettle"),
            HistoryEvent("i2", 2, 1_700_000_050, "purchase", 4.0, "Blue Mug", "Lovely mug ☕"),
        ],
        item_attributes={"category": "kitchen", "brand": "Acme"},
        item_title="Teapot",
        explanation="Because you bought the Blue Mug.",
        split="train",
        aspects=["mug"],
    )


def test_round_trip_bytes_equal():
    r = _record()
    data = r.to_json()
    back = ExampleRecord.from_json(data)
    assert back == r
    assert back.to_json() == data


@pytest.mark.parametrize(
    "mutate, field, reason",
    [
        (lambda d: d.pop("explanation"), "explanation", "missing"),
        (lambda d: d.update(item_idx="9"), "item_idx", "expected int, got str"),
        (lambda d: d.update(split="dev"), "split", "'dev' is not one of"),
        (lambda d: d.update(explanation="   "), "explanation", "empty text"),
        (lambda d: d["history"][1].update(action="like"), "history[1].action", "'like' is not one of"),
        (lambda d: d["history"][0].update(timestamp=1_800_000_000), "history[1].timestamp", "not sorted"),
        (lambda d: d.update(timestamp=1), "timestamp", "future leak"),
        (lambda d: d["item_attributes"].update(price=3), "item_attributes.price", "expected str"),
        (lambda d: d.update(extra=1), "extra", "unknown field"),
        (lambda d: d["history"][0].update(item_idx=True), "history[0].item_idx", "expected int, got bool"),
    ],
)
def test_violations_name_field_record_and_file(mutate, field, reason):
    import json

    d = json.loads(_record().to_json())
    d = copy.deepcopy(d)
    mutate(d)
    with pytest.raises(RecordError) as ei:
        validate_example(d, where="s3://b/train/shard-000001.tar")
    e = ei.value
    assert e.field == field
    assert reason in e.reason
    assert str(e).startswith("file s3://b/train/shard-000001.tar, record train-abc: field ")


def test_invalid_json_bytes():
    with pytest.raises(RecordError, match=r"file f.tar, record k1: field 'json': not valid UTF-8 JSON"):
        ExampleRecord.from_json(b"\xff\xfe{", where="f.tar", key="k1")


def test_timestamps_seconds_and_milliseconds():
    assert normalize_timestamp(1_700_000_000) == 1_700_000_000
    assert normalize_timestamp(1_700_000_000_123) == 1_700_000_000
    assert normalize_timestamp("1700000000.5") == 1_700_000_000
    for bad in ("yesterday", float("nan"), True, None, -5):
        with pytest.raises(RecordError, match="timestamp"):
            normalize_timestamp(bad)
