"""`seller-dist experiment` for real: a tiny grid (SELLER trained with Ray Train + DeepSpeed ZeRO-3 on 2
CPU workers, and the zero-shot LLM) x 2 seeds, evaluated by the eval job; the results table holds the
numbers of the runs' own result files and eval reports, and a rerun runs nothing."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from seller_dist.config import ExperimentConfig, load_config
from tests.train_helpers import prep_small


@pytest.mark.slow
@pytest.mark.ray
def test_tiny_grid_writes_the_table_of_its_runs(tmp_path: Path, tiny_llm_dir: str, capsys) -> None:
    import ray

    from seller_dist import experiment as ex
    from seller_dist.cli import main

    data = str(tmp_path / "data")
    prep_small(data)
    overrides = [
        f"out={tmp_path / 'exp'}",
        f"data={data}",
        f"llm.path={tiny_llm_dir}",
        "seeds=[0, 1]",
        "budget.max_steps=3",
        "budget.eval_examples=8",
        "systems={seller: {}, zero-shot: {model.adapter: none}}",
        "train={data.batch_size: 4, model.d_model: 32, model.num_layers: 1, model.expert_hidden: 32, "
        "optim.warmup_steps: 1}",
        "eval={workers.num_workers: 2, generation.max_new_tokens: 8, generation.batch_size: 4, "
        "text.bertscore: false, text.bootstrap_samples: 10, simulator.learned: false}",
    ]
    cfg = load_config(ExperimentConfig, None, overrides)
    config = tmp_path / "grid.yaml"
    config.write_text("# every key comes from --set\n")
    try:
        # the command, as a user runs it: our stage lines on the console, Ray's own output in the log
        assert (
            main(["experiment", "--config", str(config), *(a for o in overrides for a in ("--set", o))]) == 0
        )
        console = capsys.readouterr().out
        out = Path(cfg.out)
        log = (out / "experiment.log").read_text()
        assert "[experiment] seller seed 1: evaluate" in console and "| text/bleu4 |" in console
        assert "pid=" not in console and "Reporting training result" not in console, console[-3000:]
        assert "Reporting training result" in log  # Ray Train's own lines went to the log
        results = json.loads((out / "results.json").read_text())
        md = (out / "results.md").read_text()
        assert len(results["runs"]) == 4
        for row in results["runs"]:
            cell = out / "cells" / row["system"] / f"seed-{row['seed']}"
            assert row == json.loads((cell / "result.json").read_text())
            report = json.loads((Path(row["eval_dir"]) / "report.json").read_text())
            assert report["num_examples"] == 8
            assert row["metrics"]["text/bleu4"] == report["text"]["bleu4"]["mean"]
            line = "| " + " | ".join([row["system"], str(row["seed"]), str(row["step"])])
            line += " | " + ex.fmt_value(row["metrics"]["text/bleu4"]) + " | "
            assert line in md, line
        seller = [r for r in results["runs"] if r["system"] == "seller"]
        assert [r["step"] for r in seller] == [3, 3] and all(r["train_seconds"] > 0 for r in seller)
        for s in (0, 1):
            assert (
                out / "runs" / f"seller-seed{s}" / "checkpoints" / "step-00000003" / "COMMITTED"
            ).is_file()
        mrr = [r["metrics"]["retrieval/generated/mrr"] for r in seller]
        stat = results["summary"]["seller"]["retrieval/generated/mrr"]
        assert stat["mean"] == pytest.approx(statistics.fmean(mrr))
        assert stat["std"] == pytest.approx(statistics.stdev(mrr))
        zero = [r for r in results["runs"] if r["system"] == "zero-shot"]
        assert zero[1]["reused_from"] == "seed-0" and zero[1]["metrics"] == zero[0]["metrics"]

        again = ex.run_experiment(cfg)  # every cell finished: nothing runs
        assert again["runs"] == results["runs"]
        assert again["wall_seconds"]["this_invocation"] < 30
    finally:
        ray.shutdown()
