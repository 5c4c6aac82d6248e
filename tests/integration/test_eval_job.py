"""The eval job end to end on a local Ray (127.0.0.1): the same checkpoint evaluated by 1 and by 2 Ray
workers gives byte-identical generations and identical numbers; the report, expert load and run
config are written; the CLI fails at once on a wrong checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seller_dist.cli import main as cli_main
from seller_dist.config import EvalConfig, load_config
from seller_dist.eval.job import GENERATIONS_FILE, evaluate
from tests.eval_helpers import shared_encoder
from tests.eval_job_helpers import write_checkpoint_for
from tests.train_helpers import prep_small

TIMING_KEYS = {
    "wall_seconds",
    "model_seconds_per_worker",
    "load_seconds_per_worker",
    "explanations_per_second",
}


def comparable(results: dict) -> dict:
    """Everything but timings, the worker count and the output folder."""
    out = json.loads(json.dumps(results, default=float))
    out["generation"] = {k: v for k, v in out["generation"].items() if k not in TIMING_KEYS | {"num_workers"}}
    for k in ("out", "workers"):
        out["config"].pop(k)
    out.pop("generations")
    out["bad_generations"].pop("records_seen")  # keyed by the generations file's path
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_two_ray_workers_give_the_same_generations_and_numbers_as_one(tmp_path, tiny_llm_dir):
    import ray

    data = str(tmp_path / "data")
    prep_small(data)
    ckpt = write_checkpoint_for(data, tiny_llm_dir, str(tmp_path / "run" / "checkpoints"), ep_size=2)
    base = [
        f"data={data}",
        f"checkpoint={ckpt}",
        "limit=24",
        "generation.batch_size=4",  # 6 batches: 3 per worker with 2 workers
        "generation.max_new_tokens=12",
        "text.bootstrap_samples=20",
        "simulator.epochs=20",
    ]
    results = {}
    try:
        for w in (1, 2):
            cfg = load_config(
                EvalConfig, None, [*base, f"workers.num_workers={w}", f"out={tmp_path / f'w{w}'}"]
            )
            results[w] = evaluate(cfg, encoder=shared_encoder())
    finally:
        ray.shutdown()
    one, two = (tmp_path / f"w{w}" for w in (1, 2))
    gen1, gen2 = (d / GENERATIONS_FILE for d in (one, two))
    assert gen1.read_bytes() == gen2.read_bytes()
    assert len(gen1.read_text().splitlines()) == 24
    assert comparable(results[1]) == comparable(results[2])
    r = results[2]
    assert r["generation"]["num_workers"] == 2 and r["generation"]["batches"] == 6
    assert len(r["generation"]["model_seconds_per_worker"]) == 2
    assert len(r["expert_load"]) == 4 and sum(r["expert_load"]) == pytest.approx(1.0)
    assert r["run_config"]["checkpoint"] == ckpt and r["run_config"]["step"] == 5
    assert r["run_config"]["trained_on_manifest_sha256"] == r["run_config"]["evaluated_manifest_sha256"]
    assert r["num_examples"] == 24 and "bleu4" in r["text"] and "mrr" in r["retrieval"]["generated"]
    assert "learned" in r["simulator"]
    # synthetic references are all templated: the real kind is counted (0) and nothing else
    assert r["references"]["examples"] == {"real": 0, "template": 24}
    assert r["by_reference"]["real"] == {"num_examples": 0}
    assert r["by_reference"]["template"]["text"] == r["text"]
    assert all(json.loads(line)["reference_source"] == "template" for line in gen2.read_text().splitlines())
    learned = r["simulator"]["learned"]
    assert learned["informative"] == (
        learned["holdout_auc"] >= 0.7 and learned["informativeness"]["acceptance_spread"] >= 0.02
    )
    for name in ("report.json", "report.md", "expert_load.png"):
        assert (two / name).is_file(), name
    saved = json.loads((two / "report.json").read_text())
    assert saved["expert_load"] == pytest.approx(r["expert_load"])


def test_cli_eval_of_a_missing_checkpoint_fails_before_ray(tmp_path, capsys):
    import ray

    data = str(tmp_path / "data")
    prep_small(data)
    missing = str(tmp_path / "runs" / "checkpoints" / "step-00000007")
    code = cli_main(["eval", "--checkpoint", missing, "--data", data, "--out", str(tmp_path / "out")])
    assert code == 2
    assert (
        f"seller-dist eval: error: eval.checkpoint: checkpoint {missing} does not exist"
        in capsys.readouterr().err
    )
    assert not ray.is_initialized()
    assert not Path(tmp_path / "out").exists()
