"""`seller-dist prep` end to end on the local engine: round trip, determinism, time split, bad input,
overwrite refusal, config errors, and `seller-dist inspect` reading the result back."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

import data_prep.pipeline as pipeline
import data_prep.publish as publish
from data_prep.examples import Catalog
from data_prep.sources.base import RawEvent, RawItem, Source
from data_prep.sources.synthetic import SyntheticSource
from seller_dist import cli
from seller_dist.config import ConfigError, PrepConfig, from_dict, load_config
from seller_dist.data import shards
from seller_dist.data.bad_records import BadRecordReport, TooManyBadRecords
from seller_dist.data.inspect import summarize
from seller_dist.data.schema import SPLITS, ExampleRecord
from tests.prep_sources import cut_user_examples

SMALL = {"num_users": 60, "num_items": 40, "events_per_user_min": 3, "events_per_user_max": 12}


def prep_cfg(out: Path | str, **kw) -> PrepConfig:
    data = {"output": str(out), "max_history": 6, "shard_max_records": 150, "source_options": dict(SMALL)}
    data.update(kw)
    return from_dict(PrepConfig, data)


def read_split(root: str, manifest: dict, split: str) -> list[ExampleRecord]:
    out = []
    for info in manifest["splits"][split]["shards"]:
        data = shards.read_shard_bytes(root, info)
        for s in shards.iter_tar_samples(data, info["path"]):
            assert s["__key__"] == json.loads(s["json"])["key"]
            out.append(ExampleRecord.from_json(s["json"]))
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_records_and_checksums(tmp_path):
    cfg = prep_cfg(tmp_path / "ds")
    manifest = pipeline.run_prep(cfg)
    # the same records, built in memory with the same source and cutter
    src = SyntheticSource({}, SMALL, BadRecordReport())
    catalog = Catalog.build(list(src.items()))
    params = publish.cut_params(cfg, src)
    expected: dict[str, list[ExampleRecord]] = defaultdict(list)
    for uid, evs in src.events_by_user():
        for rec in cut_user_examples(uid, evs, catalog, params, BadRecordReport(), src.explainer()):
            expected[rec.split].append(rec)
    root = str(tmp_path / "ds")
    for split in SPLITS:
        got = read_split(root, manifest, split)
        assert got == expected[split]
        assert manifest["splits"][split]["count"] == len(got)
    assert len(manifest["splits"]["train"]["shards"]) > 1  # bounded by shard_max_records
    for entry in [
        *(s for sp in SPLITS for s in manifest["splits"][sp]["shards"]),
        *manifest["items"]["shards"],
    ]:
        data = (tmp_path / "ds" / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    # the item catalog and vocab
    items = [
        json.loads(s["json"])
        for info in manifest["items"]["shards"]
        for s in shards.iter_tar_samples(shards.read_shard_bytes(root, info), info["path"])
    ]
    assert [i["item_idx"] for i in items] == list(range(1, 41))
    assert [i["item_id"] for i in items] == sorted(i["item_id"] for i in items)
    vocab = manifest["vocab"]
    assert vocab["num_items"] == 40 and vocab["num_users"] == 60 and vocab["max_history"] == 6
    assert vocab["attribute_fields"]["category"] == sorted({i["attributes"]["category"] for i in items})
    assert manifest["templated"] is True and manifest["source"]["name"] == "synthetic"
    assert manifest["source"]["categories"][:3] == ["books", "games", "garden"]
    report = json.loads((tmp_path / "ds" / "prep_report.json").read_text())
    assert report["records_bad"] == 0 and report["counts_in"] == manifest["stats"]["input_records"] > 0
    # inspect reads everything back and agrees
    summary = summarize(root)
    assert {s: summary["splits"][s]["records"] for s in SPLITS} == {s: len(expected[s]) for s in SPLITS}
    assert summary["items"]["records"] == 40
    assert summary["split"]["mode"] == manifest["prep"]["split"] == "time"


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    pipeline.run_prep(prep_cfg(tmp_path / "a"))
    pipeline.run_prep(prep_cfg(tmp_path / "b"))
    pipeline.run_prep(prep_cfg(tmp_path / "c", source_options={**SMALL, "seed": 1}))
    a, b, c = (files_under(tmp_path / x) for x in "abc")
    a.pop("manifest.json"), b.pop("manifest.json"), c.pop("manifest.json")  # creation time differs
    assert a == b
    assert a["train/shard-000000.tar"] != c["train/shard-000000.tar"]


def test_time_split_per_user_and_no_target_in_its_history(tmp_path):
    manifest = pipeline.run_prep(prep_cfg(tmp_path / "ds"))
    by_user: dict[str, dict[str, list[ExampleRecord]]] = defaultdict(lambda: defaultdict(list))
    for split in SPLITS:
        for rec in read_split(str(tmp_path / "ds"), manifest, split):
            by_user[rec.user_id][split].append(rec)
            hist_times = [h.timestamp for h in rec.history]
            assert hist_times == sorted(hist_times) and all(t < rec.timestamp for t in hist_times)
            assert (rec.item_id, rec.timestamp) not in {(h.item_id, h.timestamp) for h in rec.history}
            assert 1 <= len(rec.history) <= 6
    assert len(by_user) == 60
    for user, splits in by_user.items():
        n = sum(len(v) for v in splits.values())
        assert len(splits["test"]) == (1 if n >= 2 else 0), user
        assert len(splits["valid"]) == (1 if n >= 3 else 0), user
        train_max = max((r.timestamp for r in splits["train"]), default=-1)
        valid = [r.timestamp for r in splits["valid"]]
        test = [r.timestamp for r in splits["test"]]
        for v in valid:
            assert train_max <= v <= min(test)
        for t in test:
            assert train_max <= t


class FlakyLogSource(Source):
    """A file-like source: `n_bad` of its `n_lines` input lines are malformed (reported, skipped)."""

    name = "flaky"

    def __init__(self, n_lines: int, n_bad: int):
        super().__init__({"events": "logs/events.jsonl"}, {}, BadRecordReport())
        self.n_lines, self.n_bad = n_lines, n_bad

    def items(self):
        for i in range(10):
            yield RawItem(f"it{i}", f"Thing {i}", {"category": f"c{i % 3}"})

    def events(self):
        bad_lines = set(range(7, 7 + 13 * self.n_bad, 13))
        for line in range(1, self.n_lines + 1):
            self.report.saw("logs/events.jsonl")
            if line in bad_lines:
                self.report.reject(
                    "logs/events.jsonl", line, "timestamp", "expected a number of seconds", "x"
                )
                continue
            yield RawEvent(
                f"u{line % 20}", f"it{line % 10}", 1_000_000 + line * 60, "purchase", text=f"ok {line}"
            )


def _use_source(monkeypatch, src: Source) -> None:
    def fake_get_source(name, inputs, options, report):
        src.report = report
        return src

    monkeypatch.setattr(pipeline, "get_source", fake_get_source)


def test_bad_records_below_threshold_publish_with_report(tmp_path, monkeypatch):
    _use_source(monkeypatch, FlakyLogSource(n_lines=400, n_bad=3))
    out = tmp_path / "ds"
    manifest = pipeline.run_prep(prep_cfg(out, max_error_rate=0.01, source_options={}))
    report = json.loads((out / "prep_report.json").read_text())
    assert report["records_bad"] == 3 and report["records_seen"] == {"logs/events.jsonl": 400}
    assert report["bad_by_reason"] == {"timestamp: expected a number of seconds": 3}
    assert report["samples"][0] == {
        "file": "logs/events.jsonl",
        "record": 7,
        "field": "timestamp",
        "reason": "expected a number of seconds",
        "raw": "x",
    }
    assert sum(manifest["splits"][s]["count"] for s in SPLITS) == 397 - 20  # first event of each user
    assert manifest["templated"] is False


def test_bad_records_above_threshold_fail_and_leave_nothing(tmp_path, monkeypatch):
    _use_source(monkeypatch, FlakyLogSource(n_lines=400, n_bad=9))
    out = tmp_path / "ds"
    with pytest.raises(TooManyBadRecords) as e:
        pipeline.run_prep(prep_cfg(out, max_error_rate=0.01, source_options={}))
    msg = str(e.value)
    assert "9 of 400 input records are bad (2.25% > max_error_rate 1.00%); nothing was published" in msg
    assert "file logs/events.jsonl, record 7, field 'timestamp': expected a number of seconds" in msg
    assert not out.exists() or files_under(out) == {}


def test_streaming_failure_after_writing_removes_shards(tmp_path, monkeypatch):
    """A streaming source fails the error check only at the end, after shards were written."""
    src = SyntheticSource({}, SMALL, BadRecordReport())
    _use_source(monkeypatch, src)
    original = src.user_events

    def with_duplicates(u):
        evs = original(u)
        return evs + evs[:2]  # 2 exact duplicates per user -> far above 1%

    src.user_events = with_duplicates
    out = tmp_path / "ds"
    with pytest.raises(TooManyBadRecords, match="event: duplicate event"):
        pipeline.run_prep(prep_cfg(out, shard_max_records=20))
    assert not out.exists() or files_under(out) == {}


def test_overwrite_refused_with_clear_message_then_allowed(tmp_path):
    out = tmp_path / "ds"
    pipeline.run_prep(prep_cfg(out))
    with pytest.raises(pipeline.PrepError) as e:
        pipeline.run_prep(prep_cfg(out))
    assert str(e.value) == (
        f"output {out} already holds a prepared dataset (manifest.json exists); set overwrite=true "
        "(--set overwrite=true) to replace it, or choose another output"
    )
    (out / "train" / "shard-999999.tar").write_bytes(b"stale")
    manifest = pipeline.run_prep(prep_cfg(out, overwrite=True, source_options={**SMALL, "num_users": 10}))
    assert manifest["vocab"]["num_users"] == 10
    assert not (out / "train" / "shard-999999.tar").exists()


def test_cli_prep_config_errors_and_success(tmp_path, capsys):
    cfg_file = tmp_path / "prep.yaml"
    cfg_file.write_text(f"output: {tmp_path / 'ds'}\nmax_histroy: 5\n")
    assert cli.main(["prep", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert "seller-dist prep: error: unknown config key 'max_histroy'; did you mean 'max_history'?" in err
    with pytest.raises(ConfigError, match="unknown config key 'source_options.num_user'"):
        pipeline.run_prep(prep_cfg(tmp_path / "x", source_options={"num_user": 5}))
    cfg_file.write_text(f"output: {tmp_path / 'ds'}\n")
    rc = cli.main(
        ["prep", "--config", str(cfg_file), "--set", "source_options.num_users=12", "--set", "max_history=4"]
    )
    assert rc == 0
    assert "prepared " in capsys.readouterr().out
    assert cli.main(["prep", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert f"seller-dist prep: error: output {tmp_path / 'ds'} already holds a prepared dataset" in err
    assert cli.main(["inspect", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "sample record" in out and "  split: time" in out
    assert cli.main(["inspect", str(tmp_path / "nothing")]) == 1
    assert "no manifest at" in capsys.readouterr().err
    shard = tmp_path / "ds" / "valid" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 1
    shard.write_bytes(bytes(data))
    assert cli.main(["inspect", str(tmp_path / "ds")]) == 1
    assert f"shard {shard} is corrupt: sha256" in capsys.readouterr().err


def test_embedded_default_config_loads():
    cfg = load_config(PrepConfig, pipeline.DEFAULT_CONFIG)
    assert cfg.source == "synthetic" and cfg.source_options["num_users"] == 300
