"""`seller-dist score-text`: every input format reads back the same texts, the metrics equal the eval
job's `text_quality` on the same pairs, and bad files give one error naming the file and record
(a pickle that names a global is refused before anything in it runs)."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from seller_dist.cli import main
from seller_dist.config import EvalConfig, load_config
from seller_dist.errors import UserError
from seller_dist.eval import text_metrics
from seller_dist.eval.score_text import read_texts, score_texts
from tests.eval_helpers import shared_encoder

PREDS = [
    "You would enjoy this cafe for its quiet corners and strong espresso.",
    "A good pick for late-night tacos with fresh salsa.",
    "The user would enjoy the bakery's sourdough and friendly staff.",
    "Great for families: big portions, kids' menu, easy parking.",
]
REFS = [
    "The user would enjoy this cafe because of its quiet seating and excellent espresso.",
    "You would like this taqueria for its late hours and fresh salsa bar.",
    "This user would enjoy the bakery for its sourdough, pastries and friendly staff.",
    "A family-friendly diner with large portions and a children's menu.",
]


def write_all_formats(tmp_path, texts: list[str], field: str) -> dict[str, str]:
    paths = {
        "txt": tmp_path / f"{field}.txt",
        "json": tmp_path / f"{field}.json",
        "jsonl": tmp_path / f"{field}.jsonl",
        "jsonl_obj": tmp_path / f"{field}-obj.jsonl",
        "pkl": tmp_path / f"{field}.pkl",
    }
    paths["txt"].write_text("\n".join(texts) + "\n")
    paths["json"].write_text(json.dumps(texts))
    paths["jsonl"].write_text("".join(json.dumps(t) + "\n" for t in texts))
    paths["jsonl_obj"].write_text(
        "".join(json.dumps({field: t, "user_id": str(i)}) + "\n" for i, t in enumerate(texts))
    )
    paths["pkl"].write_bytes(pickle.dumps(texts))
    return {k: str(v) for k, v in paths.items()}


def test_every_format_reads_back_the_same_texts(tmp_path):
    paths = write_all_formats(tmp_path, PREDS, "generated")
    for kind, path in paths.items():
        assert read_texts(path, "generated" if kind == "jsonl_obj" else None) == PREDS, kind
    # an eval job's generations.jsonl: the default fields are found without --*-field
    assert read_texts(paths["jsonl_obj"]) == PREDS


def test_the_command_writes_the_eval_jobs_text_metrics(tmp_path):
    preds = write_all_formats(tmp_path, PREDS, "generated")["pkl"]
    refs = write_all_formats(tmp_path, REFS, "reference")["jsonl_obj"]
    out = tmp_path / "metrics.json"
    args = ["score-text", "--predictions", preds, "--references", refs, "--reference-field", "reference"]
    assert (
        main(
            [*args, "--out", str(out), "--set", "text.bertscore=false", "--set", "text.bootstrap_samples=20"]
        )
        == 0
    )
    got = json.loads(out.read_text())
    want = text_metrics.text_quality(PREDS, REFS, bootstrap_samples=20)
    assert got["n"] == 4 and got["text"] == json.loads(json.dumps(want))
    assert "bertscore_f1" not in got["text"] and got["text_options"]["bertscore"] is False
    assert 0 < got["text"]["bleu1"]["mean"] < 100 and got["text"]["usr"]["mean"] == 1.0
    prov = got["provenance"]  # an artifact the docs can cite: what ran, where, on which commit
    assert prov["command"] == " ".join(
        [
            "seller-dist",
            *args,
            "--out",
            str(out),
            "--set",
            "text.bertscore=false",
            "--set",
            "text.bootstrap_samples=20",
        ]
    )
    assert {"commit", "tree", "machine", "date"} <= set(prov)

    # --limit scores the first N pairs
    assert main([*args, "--out", str(out), "--limit", "2", "--set", "text.bertscore=false"]) == 0
    got = json.loads(out.read_text())
    assert (
        got["n"] == 2
        and got["text"]["bleu4"]
        == json.loads(json.dumps(text_metrics.text_quality(PREDS[:2], REFS[:2])))["bleu4"]
    )


def test_bertscore_is_the_eval_jobs_with_the_same_encoder():
    cfg = load_config(EvalConfig, None, ["data=unused"])
    got = score_texts(PREDS, REFS, cfg, encoder=shared_encoder())
    want = text_metrics.text_quality(PREDS, REFS, encoder=shared_encoder())
    assert got["bertscore_f1"] == want["bertscore_f1"] and 0.3 < got["bertscore_f1"]["mean"] < 1.0


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_pickle_that_names_a_global_is_refused_before_it_runs(tmp_path):
    evil = _RunsCode()
    evil.target = str(tmp_path / "pwned")
    path = tmp_path / "preds.pkl"
    path.write_bytes(pickle.dumps(["fine", evil]))
    with pytest.raises(
        UserError, match=r"preds\.pkl: the pickle refers to (posix|os)\.mkdir; score-text reads only"
    ):
        read_texts(str(path))
    assert not (tmp_path / "pwned").exists()


def test_bad_inputs_name_the_file_and_record(tmp_path, capsys):
    bad = tmp_path / "gens.jsonl"
    bad.write_text(json.dumps({"generated": "ok"}) + "\n" + json.dumps({"generated": 7}) + "\n")
    with pytest.raises(UserError, match=r"gens\.jsonl: record 1: field 'generated' is int, not a string"):
        read_texts(str(bad))
    with pytest.raises(UserError, match=r"gens\.jsonl: record 0: no field 'text' \(keys: \['generated'\]\)"):
        read_texts(str(bad), "text")
    broken = tmp_path / "refs.jsonl"
    broken.write_text('"a"\n{not json\n')
    with pytest.raises(UserError, match=r"refs\.jsonl: line 2: not JSON"):
        read_texts(str(broken))
    with pytest.raises(UserError, match=r"x\.csv: unknown format"):
        read_texts(str(tmp_path / "x.csv"))

    # the CLI: counts that differ are one line naming both files, exit 2
    preds = write_all_formats(tmp_path, PREDS, "generated")["txt"]
    refs = write_all_formats(tmp_path, REFS[:3], "reference")["json"]
    assert (
        main(["score-text", "--predictions", preds, "--references", refs, "--set", "text.bertscore=false"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"seller-dist score-text: error: {preds} has 4 texts but {refs} has 3; they must be aligned one to one"
    )
