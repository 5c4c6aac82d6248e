"""report.json / report.md / PNGs / wandb offline, and `seller-dist report A B` side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from seller_dist.cli import main
from seller_dist.eval.report import comparison_table, flat_metrics, markdown, write_report


def _stat(mean: float, std: float = 0.1) -> dict:
    return {"mean": mean, "std": std, "n": 10}


def make_results(system: str, shift: float = 0.0) -> dict:
    return {
        "system": system,
        "generations": f"runs/{system}/generations.jsonl",
        "data": "outputs/data/synthetic",
        "split": "test",
        "num_examples": 10,
        "config": {"wandb": "disabled", "storage": {"endpoint_url": None, "secret_access_key": "hunter2"}},
        "text": {"bleu4": _stat(12.5 + shift, 1.25), "rougeL": _stat(30.0 + shift), "usr": _stat(0.9)},
        "grounding": {
            "generated": {"cites_history": _stat(0.7 + shift / 100), "cites_reference_event": _stat(0.4)},
            "reference": {"cites_history": _stat(1.0, 0.0), "cites_reference_event": _stat(1.0, 0.0)},
            "attention_top_is_cited": _stat(0.55),
        },
        "retrieval": {
            "generated": {"hr@10": _stat(0.6 + shift / 100), "mrr": _stat(0.35)},
            "reference": {"hr@10": _stat(0.95), "mrr": _stat(0.8)},
            "generic": {"hr@10": _stat(0.12), "mrr": _stat(0.05)},
            "num_candidates": 100.0,
        },
        "simulator": {
            "learned": {
                "train_split": "valid",
                "train_records": 75,
                "holdout_records": 25,
                "holdout_auc": 0.81,
                "acceptance": {
                    s: _stat(v)
                    for s, v in (("generated", 0.6), ("reference", 0.7), ("generic", 0.5), ("none", 0.5))
                },
            },
            "exact": {"acceptance": {"generated": _stat(0.66), "none": _stat(0.5)}},
        },
        "expert_load": [0.3, 0.2, 0.25, 0.25],
        "attention_example": {
            "key": "test-1",
            "item_title": "Vopa Rake 102",
            "generated": "because you bought Rate Rake 161",
            "cited_offset": 1,
            "events": [
                {"offset": 2, "title": "A", "action": "view", "weight": 0.1},
                {"offset": 1, "title": "Rate Rake 161", "action": "purchase", "weight": 0.7},
                {"offset": 0, "title": "C", "action": "click", "weight": 0.2},
            ],
        },
    }


def test_write_report_files(tmp_path: Path):
    res = make_results("seller")
    paths = write_report(res, str(tmp_path / "run"))
    back = json.loads(Path(paths["json"]).read_text())
    assert back["retrieval"] == res["retrieval"] and back["text"] == res["text"]
    # secret values never leave the process (seller_dist.redact; tests/unit/test_secrets.py)
    assert back["config"]["storage"] == {"endpoint_url": None, "secret_access_key": "***"}
    md = Path(paths["markdown"]).read_text()
    assert "| bleu4 | 12.5000 ± 1.2500 |" in md
    assert "| hr@10 | 0.6000 ± 0.1000 | 0.9500 ± 0.1000 | 0.1200 ± 0.1000 |" in md
    assert "| metric | generated | reference | generic |" in md
    assert "Simulator hold-out AUC: 0.8100" in md and "hunter2" not in md
    for name in ("metrics", "expert_load", "attention"):
        with Image.open(paths[name]) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 200


def test_flat_metrics_names():
    flat = flat_metrics(make_results("seller"))
    assert flat["retrieval/generated/hr@10"] == (0.6, 0.1)
    assert flat["simulator/exact/acceptance/none"] == (0.5, 0.1)
    assert flat["simulator/learned/holdout_auc"][0] == 0.81
    assert "retrieval/num_candidates" not in flat


def test_cli_report_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture):
    write_report(make_results("seller", shift=5.0), str(tmp_path / "seller_run"))
    write_report(make_results("bag"), str(tmp_path / "bag_run"))
    assert main(["report", str(tmp_path / "seller_run"), str(tmp_path / "bag_run") + "/report.json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| metric | seller (seller_run) | bag (report.json) |")
    assert "| text/bleu4 | 17.5000 ± 1.2500 | 12.5000 ± 1.2500 |" in out
    assert "| retrieval/generated/hr@10 | 0.6500 ± 0.1000 | 0.6000 ± 0.1000 |" in out
    assert (
        out == comparison_table([str(tmp_path / "seller_run"), str(tmp_path / "bag_run/report.json")]) + "\n"
    )


def test_cli_report_missing_run_names_it(tmp_path: Path, capsys: pytest.CaptureFixture):
    write_report(make_results("seller"), str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b'}: no report.json at {tmp_path / 'b'}/report.json" in err


def test_markdown_without_optional_sections():
    res = make_results("seller")
    for k in ("simulator", "expert_load", "attention_example"):
        res.pop(k)
    md = markdown(res)
    assert "Simulated acceptance" not in md and "## Retrieval utility" in md


@pytest.mark.slow  # wandb starts its wandb-core service process
def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    res = make_results("seller")
    res["config"].update(wandb_dir=str(tmp_path / "wandb"), wandb_project="t")
    paths = write_report(res, str(tmp_path / "run"), wandb_mode="offline")
    run_dir = Path(paths["wandb"]).parent
    assert run_dir.name.startswith("offline-run-")
    # wandb-core may still be flushing the offline run file for a moment after finish() returns
    deadline = time.monotonic() + 20
    while True:
        stored = b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
        if b"retrieval/generated/hr@10" in stored or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert b"retrieval/generated/hr@10" in stored
    assert b"hunter2" not in stored


def test_report_to_an_fsspec_url_and_read_back():
    # object-store URLs go through seller_dist.storage (fsspec); memory:// stands in for s3:// here
    paths = write_report(make_results("seller"), "memory://eval-reports/run1")
    assert paths["json"] == "memory://eval-reports/run1/report.json"
    assert paths["metrics"] == "memory://eval-reports/run1/metrics.png"
    assert "| text/bleu4 | 12.5000 ± 1.2500 |" in comparison_table(["memory://eval-reports/run1"])
