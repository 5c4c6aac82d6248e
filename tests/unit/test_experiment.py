"""`seller-dist experiment` (seller_dist/experiment.py): the grid, its results table and resume.

Training and evaluation are replaced by fakes that return known numbers per (system, seed), so the
table's arithmetic is checked exactly in a second; tests/integration/test_experiment_grid.py runs a
real tiny grid (Ray Train + the eval job)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from seller_dist import experiment as ex
from seller_dist.config import ConfigError, ExperimentConfig, load_config
from seller_dist.data.shards import SCHEMA_VERSION
from seller_dist.train import driver

# (system, seed) -> (bleu4, mrr) the fake eval reports; zero-shot does not depend on the seed
NUMBERS = {
    ("seller", 0): (40.0, 0.50),
    ("seller", 1): (44.0, 0.70),
    ("bag", 0): (30.0, 0.40),
    ("bag", 1): (33.0, 0.46),
    ("zero-shot", 0): (10.0, 0.90),
    ("zero-shot", 1): (10.0, 0.90),
}


class Fakes:
    def __init__(self) -> None:
        self.trained: list[tuple[str, int, int]] = []  # (run_name, seed, max_steps)
        self.evaluated: list[tuple[str, int]] = []
        self.fail_eval_of: str | None = None

    def train(self, tcfg):
        self.trained.append((tcfg.run_name, tcfg.seed, tcfg.max_steps))
        return SimpleNamespace(checkpoint=SimpleNamespace(step=tcfg.max_steps))  # a TrainResult, as used

    def evaluate(self, ecfg):
        if ecfg.system == self.fail_eval_of:
            raise RuntimeError("eval cut off")
        seed = ecfg.generation.seed
        self.evaluated.append((ecfg.system, seed))
        bleu, mrr = NUMBERS[(ecfg.system, seed)]
        step = 0 if ecfg.checkpoint == "zero-shot" else 7
        return {
            "system": ecfg.system,
            "num_examples": ecfg.limit,
            "run_config": {"step": step},
            "text": {"bleu4": {"mean": bleu, "std": 1.5, "n": 4}},
            "retrieval": {"generated": {"mrr": {"mean": mrr, "std": 0.25, "n": 4}}},
            # a metric one system lacks (no fusion attention without training)
            **({"grounding": {"attention_top_is_cited": {"mean": 0.5, "std": 0.5}}} if step else {}),
        }


@pytest.fixture
def fakes(monkeypatch) -> Fakes:
    f = Fakes()
    monkeypatch.setattr(driver, "train", f.train)
    monkeypatch.setattr(ex, "_evaluate", f.evaluate)
    return f


def fake_manifest(created_unix: int, code: str, shard_sha: str = "ab" * 32) -> dict:
    shard = {"path": "train/shard-000000.tar", "count": 3, "bytes": 10, "sha256": shard_sha}
    return {
        "schema_version": SCHEMA_VERSION,
        "created_unix": created_unix,
        "code_version": code,
        "splits": {"train": {"count": 3, "shards": [shard]}},
    }


def config(tmp_path: Path, *extra: str) -> ExperimentConfig:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    if not (data / "manifest.json").exists():  # a prepared dataset, as far as the grid reads it
        (data / "manifest.json").write_text(json.dumps(fake_manifest(created_unix=1, code="0.1.0+aaaa")))
    overrides = [
        f"out={tmp_path / 'exp'}",
        f"data={data}",
        "llm.path=/models/some-llm",  # given: nothing is bootstrapped
        "seeds=[0, 1]",
        "budget.max_steps=7",
        "budget.eval_examples=4",
        "table_metrics=[text/bleu4, retrieval/generated/mrr, grounding/attention_top_is_cited]",
        *extra,
    ]
    cfg = load_config(ExperimentConfig, None, overrides)
    cfg.systems = {
        "seller": {},
        "bag": {"model": {"history_encoder": "bag"}, "model.history_text": "sorted"},
        "zero-shot": {"model.adapter": "none"},
    }
    return cfg


def test_grid_writes_the_table_of_its_runs(tmp_path: Path, fakes: Fakes) -> None:
    cfg = config(tmp_path)
    results = ex.run_experiment(cfg)
    out = Path(cfg.out)

    # every trained system x seed trained once with the same budget and its own seed; zero-shot never
    assert sorted(fakes.trained) == [
        ("bag-seed0", 0, 7),
        ("bag-seed1", 1, 7),
        ("seller-seed0", 0, 7),
        ("seller-seed1", 1, 7),
    ]
    # seed after seed; zero-shot (same LLM, greedy) evaluated once and reused for seed 1
    assert fakes.evaluated == [("seller", 0), ("bag", 0), ("zero-shot", 0), ("seller", 1), ("bag", 1)]

    # results.json's per-seed rows are the per-run result files, exactly
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["runs"] == results["runs"]
    assert len(results["runs"]) == 6
    for row in results["runs"]:
        cell = json.loads((out / "cells" / row["system"] / f"seed-{row['seed']}" / "result.json").read_text())
        assert row == cell
        bleu, mrr = NUMBERS[(row["system"], row["seed"])]
        assert cell["metrics"]["text/bleu4"] == bleu and cell["metrics"]["retrieval/generated/mrr"] == mrr
        assert cell["example_std"]["text/bleu4"] == 1.5
        assert cell["num_examples"] == 4
    zs1 = json.loads((out / "cells" / "zero-shot" / "seed-1" / "result.json").read_text())
    assert zs1["reused_from"] == "seed-0" and zs1["eval_seconds"] == 0.0

    # mean and sample std (n - 1) over seeds
    s = results["summary"]
    assert s["seller"]["text/bleu4"]["mean"] == pytest.approx(42.0)
    assert s["seller"]["text/bleu4"]["std"] == pytest.approx(math.sqrt(8.0))  # (2^2 + 2^2) / (2 - 1)
    assert s["bag"]["retrieval/generated/mrr"]["std"] == pytest.approx(statistics.stdev([0.40, 0.46]))
    assert s["zero-shot"]["text/bleu4"] == {
        "mean": 10.0,
        "std": 0.0,
        "n": 2,
        "seeds": [0, 1],
        "values": [10.0, 10.0],
    }
    assert "grounding/attention_top_is_cited" not in s["zero-shot"]
    assert s["seller"]["grounding/attention_top_is_cited"]["n"] == 2

    # results.md: the summary cells and the per-seed rows hold those numbers
    md = (out / "results.md").read_text()
    assert "| text/bleu4 | 42.00 ± 2.83 | 31.50 ± 2.12 | 10.00 ± 0.00 |" in md
    assert "| retrieval/generated/mrr | 0.6000 ± 0.1414 | 0.4300 ± 0.0424 | 0.9000 ± 0.0000 |" in md
    assert "| grounding/attention_top_is_cited | 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | — |" in md
    for row in results["runs"]:
        m = row["metrics"]
        cells = [row["system"], str(row["seed"]), str(row["step"])]
        cells += [ex.fmt_value(m.get(k)) for k in cfg.table_metrics]
        line = "| " + " | ".join(cells) + " | "
        assert line in md, line
    assert "| seller | 1 | 7 | 44.00 | 0.7000 | 0.5000 |" in md
    assert "| zero-shot | 1 | 0 | 10.00 | 0.9000 | — |" in md
    assert results["wall_seconds"]["total"] == pytest.approx(
        sum(r["train_seconds"] + r["eval_seconds"] for r in results["runs"]), abs=0.2
    )


def test_rerun_skips_finished_cells_and_resumes_a_cut_off_eval(tmp_path: Path, fakes: Fakes) -> None:
    cfg = config(tmp_path)
    fakes.fail_eval_of = "bag"
    with pytest.raises(RuntimeError, match="eval cut off"):
        ex.run_experiment(cfg)
    assert fakes.trained == [("seller-seed0", 0, 7), ("bag-seed0", 0, 7)]
    assert (Path(cfg.out) / "cells" / "seller" / "seed-0" / "result.json").exists()

    fakes.fail_eval_of = None
    fakes.trained.clear()
    fakes.evaluated.clear()
    first = ex.run_experiment(cfg)
    # seller seed 0 finished before; bag seed 0 had trained: only its eval runs again
    assert ("seller-seed0", 0, 7) not in fakes.trained and ("bag-seed0", 0, 7) not in fakes.trained
    assert ("seller", 0) not in fakes.evaluated and ("bag", 0) in fakes.evaluated

    fakes.trained.clear()
    fakes.evaluated.clear()
    again = ex.run_experiment(cfg)
    assert fakes.trained == [] and fakes.evaluated == []
    assert again["runs"] == first["runs"] and again["summary"] == first["summary"]

    table = ex.run_experiment(cfg, table_only=True)
    assert table["runs"] == first["runs"]


def test_zero_shot_is_evaluated_once_also_one_cell_per_invocation(tmp_path: Path, fakes: Fakes) -> None:
    """`--systems zero-shot --seeds 1` after `--seeds 0`: the finished seed's result is reused."""
    cfg = config(tmp_path)
    ex.run_experiment(cfg, systems=["zero-shot"], seeds=[0])
    ex.run_experiment(cfg, systems=["zero-shot"], seeds=[1])
    assert fakes.evaluated == [("zero-shot", 0)]
    rec = json.loads((Path(cfg.out) / "cells" / "zero-shot" / "seed-1" / "result.json").read_text())
    assert rec["reused_from"] == "seed-0" and rec["seed"] == 1 and rec["eval_seconds"] == 0.0


def test_a_cell_made_with_another_config_is_an_error(tmp_path: Path, fakes: Fakes) -> None:
    ex.run_experiment(config(tmp_path), systems=["seller"], seeds=[0])
    with pytest.raises(
        ex.StaleCellError, match=r"cells/seller/seed-0/result.json was made with another config"
    ):
        ex.run_experiment(config(tmp_path, "budget.max_steps=8"), systems=["seller"], seeds=[0])
    # where results are written and how many eval workers run change nothing
    ex.run_experiment(config(tmp_path, "eval={workers.num_workers: 2}"), systems=["seller"], seeds=[0])


def test_the_same_shards_prepared_again_keep_the_cells_other_shards_do_not(
    tmp_path: Path, fakes: Fakes
) -> None:
    """The dataset in a cell's fingerprint is its shards (Manifest.sha256), not the manifest's bytes:
    prep rerun at another time and commit writes the same shards, and the finished cells stay."""
    cfg = config(tmp_path)
    ex.run_experiment(cfg, systems=["seller"], seeds=[0])
    manifest = tmp_path / "data" / "manifest.json"
    manifest.write_text(json.dumps(fake_manifest(created_unix=2, code="0.1.0+bbbb")))
    fakes.trained.clear()
    ex.run_experiment(cfg, systems=["seller"], seeds=[0])
    assert fakes.trained == []
    manifest.write_text(json.dumps(fake_manifest(created_unix=2, code="0.1.0+bbbb", shard_sha="cd" * 32)))
    with pytest.raises(ex.StaleCellError, match=r"cells/seller/seed-0/result.json was made with another"):
        ex.run_experiment(cfg, systems=["seller"], seeds=[0])


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"systems.bag sets \['max_steps'\]"):
        load_config(ExperimentConfig, None, ["systems={bag: {max_steps: 10}}"])
    with pytest.raises(ConfigError, match="train sets"):
        load_config(ExperimentConfig, None, ["train={seed: 3}"])
    with pytest.raises(ConfigError, match="seeds"):
        load_config(ExperimentConfig, None, ["seeds=[1, 1]"])
    cfg = config(tmp_path)
    with pytest.raises(ConfigError, match="'gru' is not a system"):
        ex.grid(cfg, systems=["gru"])
    cfg.systems["broken"] = {"model.history_encoder": "lstm"}
    with pytest.raises(ConfigError, match="systems.broken: model.history_encoder"):
        ex.train_config_for(cfg, ex.grid(cfg, systems=["broken"])[0], "d", "l")


def test_packaged_experiment_configs_load() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "experiments"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert names == [
        "movielens.yaml",
        "movielens_smollm2.yaml",
        "movielens_smollm2_120.yaml",
        "movielens_smollm2_cited.yaml",
        "synthetic.yaml",
        "synthetic_smollm2.yaml",
        "synthetic_smollm2_cited.yaml",
        "xrec_yelp.yaml",
        "xrec_yelp_smollm2.yaml",
    ]
    for p in root.glob("*.yaml"):
        cfg = load_config(ExperimentConfig, p)
        if p.name == "movielens_smollm2_120.yaml":
            # the step-budget grid: the 40-step grid's chat systems, data and recipe; only the steps differ
            base = load_config(ExperimentConfig, root / "movielens_smollm2.yaml")
            assert cfg.data == base.out + "/data" and cfg.llm == base.llm and cfg.train == base.train
            assert cfg.systems == {k: base.systems[k] for k in ("seller-chat", "bag-chat")}
            assert cfg.budget.eval_examples == base.budget.eval_examples and cfg.eval == base.eval
            assert (cfg.budget.max_steps, base.budget.max_steps) == (120, 40)
            assert set(cfg.seeds) <= set(base.seeds)  # each row has its 40-step counterpart
            continue
        if p.name.endswith("_smollm2_cited.yaml"):
            # the cited-event loss grids: the 40-step grid's whole-title systems, data, recipe and
            # seeds plus the loss, and its zero-shot, scored on every test example (one per user);
            # nothing else differs
            base = load_config(ExperimentConfig, root / p.name.replace("_cited", ""))
            assert cfg.data == base.out + "/data" and cfg.llm == base.llm and cfg.train == base.train
            assert cfg.seeds == base.seeds and cfg.budget.max_steps == base.budget.max_steps
            users = base.prep.get("max_users") or base.prep.get("source_options.num_users")
            assert cfg.eval == base.eval and cfg.budget.eval_examples == users
            for name in ("seller-chat", "bag-chat"):
                want = {**base.systems[f"{name}-fulltitle"], "model.cited_event_loss_coef": 1.0}
                assert cfg.systems[f"{name}-cited"] == want
            assert cfg.systems["zero-shot"] == base.systems["zero-shot"]  # on the same examples
            assert len(cfg.systems) == 3
            continue
        # the real-LLM grids (a 135M LLM on 2 CPUs): SELLER, `bag`, the id-only and dense-adapter
        # ablations and zero-shot, every one on the zero-shot's chat template and question
        if "smollm2" in p.name:
            chat = {k: v for k, v in cfg.systems.items() if v.get("model.prompt_format") == "chat"}
            assert {"seller-chat", "bag-chat", "zero-shot"} <= set(chat)
            assert chat["bag-chat"]["model.history_encoder"] == "bag"
            assert [v.get("model.prompt") for v in chat.values()].count("ids") == 1
            assert [v.get("model.adapter") for v in chat.values()].count("dense") == 1
            asks = {v["model.prompt_instruction"] for v in chat.values()}
            assert len(asks) == 1, asks  # every chat system is asked the same question
        else:
            assert set(cfg.systems) == {"seller", "bag", "ids", "dense", "zero-shot"}
        assert len(cfg.seeds) >= 3
        for cell in ex.grid(cfg, seeds=[cfg.seeds[0]]):  # every system is a valid train config
            tcfg = ex.train_config_for(cfg, cell, "d", "l")
            ex.eval_config_for(cfg, cell, "d", "l", tcfg, "c")


def test_system_independent_metrics_are_yardsticks() -> None:
    from seller_dist import experiment as ex

    for name in (
        "simulator/learned/holdout_auc",
        "simulator/learned/informative",
        "simulator/learned/acceptance/reference",
        "retrieval/generic/mrr",
    ):
        assert ex.metric_kind(name) == "yardstick", name
    for name in ("simulator/learned/acceptance/generated", "text/bleu4", "retrieval/generated/mrr"):
        assert ex.metric_kind(name) == "system", name
    assert ex.metric_kind("by_reference/real/text/bleu4") == "group"
    assert ex.metric_kind("by_reference/real/num_examples") == "count"


def test_a_real_source_is_prepared_from_prep_config_defaults_with_max_users(tmp_path: Path) -> None:
    """No prep_config and a source other than synthetic: PrepConfig's defaults (not the packaged
    synthetic prep config, whose generator options would be recorded for the real source)."""
    from tests.prep_sources import write_events_inputs

    path = write_events_inputs(tmp_path / "raw")["csv"]
    prep = {
        "source": "events",
        "inputs": {"path": path},
        "events_columns": {"user": "uid", "item": "sku", "timestamp": "ts", "action": "type", "text": "note"},
        "source_options": {"action_aliases": {"add_to_cart": "cart"}},
        "max_error_rate": 0.2,
        "max_users": 5,
    }
    cfg = load_config(ExperimentConfig, None, [f"out={tmp_path / 'exp'}", f"prep={json.dumps(prep)}"])
    data, seconds = ex.prepare_data(cfg)
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    assert seconds is not None and manifest["source"]["name"] == "events"
    assert "num_users" not in manifest["source"]["options"]  # no synthetic generator options
    assert manifest["vocab"]["num_users"] == 5 and manifest["prep"]["max_users"] == 5
    assert ex.prepare_data(cfg) == (data, None)  # prepared once
