"""The docs' tables are their artifacts' (tools/doc_tables.py): every generated block in the
Markdown files equals what its committed JSON gives, every committed artifact backs a table and
says where it came from, a block edited by hand is caught, and an experiment's results.json renders
whatever its systems and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from seller_dist import experiment as ex
from seller_dist.config import ExperimentConfig, load_config
from seller_dist.data.shards import SCHEMA_VERSION
from seller_dist.train import driver
from tools import doc_tables as tables

ARTIFACTS = sorted((tables.REPO / "docs" / "bench").glob("*.json"))


def artifacts_used(root: Path = tables.REPO) -> set[str]:
    """The artifacts the generated blocks of the repository's Markdown name."""
    used: set[str] = set()
    for path in tables.markdown_files(root):
        for m in tables.BLOCK.finditer(path.read_text(encoding="utf-8")):
            used.update(t for t in m["spec"].split()[1:] if "=" not in t)
    return used


def test_every_generated_table_matches_its_artifact() -> None:
    assert tables.stale_blocks() == [], "regenerate: ./launch.sh tables"
    assert tables.main(["--check"]) == 0  # what `./launch.sh tables --check` runs


def test_every_committed_artifact_backs_a_table_and_says_where_it_came_from() -> None:
    used = artifacts_used()
    for path in ARTIFACTS:
        rel = str(path.relative_to(tables.REPO))
        assert rel in used, f"{rel} backs no table: add a <!-- table: ... --> block or remove the file"
        art = json.loads(path.read_text())
        p = tables.provenance_of(art)
        assert p.get("commit") or p.get("added_in_commit"), f"{rel}: no commit, not even the one adding it"
        assert p.get("tree") in ("clean", "dirty", "unknown"), rel
        if "provenance" in art:  # written by seller_dist.version.provenance
            assert p["command"] and p["date"] and p["machine"]["cpus"], rel


def _doc(root: Path, artifact: dict, spec: str) -> Path:
    (root / "docs" / "bench").mkdir(parents=True)
    (root / "docs" / "bench" / "a.json").write_text(json.dumps(artifact))
    doc = root / "doc.md"
    doc.write_text(f"# Doc\n\n<!-- table: {spec} docs/bench/a.json -->\n<!-- /table -->\n\ntext after\n")
    doc.write_text(tables.regenerate(doc.read_text(), root))
    return doc


def test_a_table_edited_by_hand_is_stale_and_regenerates(tmp_path: Path) -> None:
    run = {"variant": "eager", "micro_batch": 8, "tokens_per_s": 1000.0, "samples_per_s": 10.0}
    run |= {"step_ms": 800.0, "mfu": 0.3, "mfu_needed_flops": 0.25, "peak_memory_gb": 5.0}
    prov = {"command": "seller-dist bench gpu", "date": "2026-12-06T00:00:00+00:00"}
    prov |= {"commit": "0123456789abcdef", "tree": "clean", "machine": {"cpus": 16, "gpus": [{"name": "G"}]}}
    doc = _doc(tmp_path, {"provenance": prov, "runs": [run]}, "gpu-train")
    text = doc.read_text()
    assert "| eager | 8 | 1,000 | 10.0 | 800.0 | 1.00 | 30.0% | 25.0% | 5.0 GB |" in text
    assert "Artifact `docs/bench/a.json`: commit 0123456, clean tree, 2026-12-06, 1 x G, 16 CPUs;" in text
    assert text.endswith("<!-- /table -->\n\ntext after\n") and tables.stale_blocks(tmp_path) == []

    doc.write_text(text.replace("1,000", "1,200"))
    assert tables.stale_blocks(tmp_path) == ["doc.md: gpu-train docs/bench/a.json"]
    assert tables.write_all(tmp_path) == [doc] and doc.read_text() == text


def test_experiment_results_render_for_any_systems_and_metrics(tmp_path: Path, monkeypatch) -> None:
    """A results.json as `seller-dist experiment` writes it, with systems and metrics of its own
    (what a later grid on a real LLM publishes), becomes the block results.md shows."""

    def train(tcfg):
        return SimpleNamespace(checkpoint=SimpleNamespace(step=tcfg.max_steps))  # a TrainResult, as used

    def evaluate(ecfg):
        score = {"llm-a": 0.25, "llm-b": 0.75}[ecfg.system] + ecfg.generation.seed / 100
        metrics = {"text": {"meteor": {"mean": score, "std": 0.1}}}
        metrics["retrieval"] = {"generated": {"ndcg@5": {"mean": 2 * score, "std": 0.0}}}
        return {"num_examples": 3, "run_config": {"step": 5}, **metrics}

    monkeypatch.setattr(driver, "train", train)
    monkeypatch.setattr(ex, "_evaluate", evaluate)
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "splits": {}}))
    overrides = [f"out={tmp_path / 'exp'}", f"data={data}", "llm.path=/models/x", "seeds=[0, 1]"]
    cfg = load_config(
        ExperimentConfig, None, [*overrides, "table_metrics=[text/meteor, retrieval/generated/ndcg@5]"]
    )
    cfg.systems = {"llm-a": {}, "llm-b": {"model.history_encoder": "bag"}}
    results = ex.run_experiment(cfg)

    root = tmp_path / "repo"
    doc = _doc(root, json.loads((tmp_path / "exp" / "results.json").read_text()), "experiment")
    text = doc.read_text()
    md = ex.markdown(results)
    assert "| text/meteor | 0.2550 ± 0.0071 | 0.7550 ± 0.0071 |" in text
    assert "| llm-b | 1 | 5 | 0.7600 | 1.5200 |" in text
    assert "### Per seed" in text and "# Experiment" not in text  # one heading level down, no title
    assert md.split("\n## Per seed\n")[1].strip() in text
    assert "Artifact `docs/bench/a.json`: commit " in text and tables.stale_blocks(root) == []


def test_text_side_by_side_gives_each_systems_mean_and_std_over_seeds(tmp_path: Path) -> None:
    """tools/xrec_released_subset.py's artifact: our cells (a system per seed) and a published
    system's one run, scored by the same code on the same examples, become one row per system."""

    def text(bleu4: float, rouge: float) -> dict:
        return {"bleu4": {"mean": bleu4, "std": 0.5, "n": 7}, "rougeL": {"mean": rouge, "std": 1.0, "n": 7}}

    runs = [
        {"system": "seller-chat", "seed": "seed-0", "n": 7, "text": text(1.0, 10.0)},
        {"system": "seller-chat", "seed": "seed-1", "n": 7, "text": text(2.0, 12.0)},
        {"system": "xrec-released", "seed": "", "n": 7, "text": text(3.25, 20.5)},
    ]
    prov = {"command": "python -m tests.xrec_released_subset a b c", "date": "2026-12-06T00:00:00+00:00"}
    prov |= {"commit": "0123456789abcdef", "tree": "clean", "machine": {"cpus": 2}}
    doc = _doc(
        tmp_path,
        {"kind": "text-side-by-side", "provenance": prov, "matched": 7, "runs": runs},
        "text-side-by-side",
    )
    text_md = doc.read_text()
    assert "7 examples, every system on the same ones." in text_md
    assert "| system | runs | bleu4 | rougeL |" in text_md
    assert "| seller-chat | 2 | 1.5000 ± 0.7071 | 11.00 ± 1.41 |" in text_md
    assert "| xrec-released | 1 | 3.2500 | 20.50 |" in text_md


def test_the_demo_table_is_its_reports_rows_from_demo_json(tmp_path: Path) -> None:
    """`seller-dist demo` writes demo.json (every evaluated run's report and the provenance); the
    `demo` table is `seller-dist report`'s table of those reports, cut to the rows asked for."""
    from seller_dist.demo import DemoOptions, demo_artifact
    from seller_dist.eval.report import comparison_table

    def report(system: str, bleu4: float, cites: float) -> dict:
        stat = {"mean": cites, "std": 0.25, "n": 4}
        return {
            "system": system,
            "num_examples": 4,
            "text": {"bleu4": {"mean": bleu4, "std": 1.0, "n": 4}},
            "grounding": {"generated": {"cites_history": stat, "cites_reference_event": stat}},
        }

    folders = []
    for name, bleu4, cites in (("seller", 3.5, 0.75), ("bag", 2.0, 0.5)):
        folder = tmp_path / "eval" / name
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps(report(name, bleu4, cites)))
        folders.append(str(folder))
    art = demo_artifact(DemoOptions(llm="smollm2", train_steps=40, eval_limit=4), folders, 1448.46)
    assert art["provenance"]["command"] and [r["label"] for r in art["runs"]] == ["seller", "bag"]
    text_md = _doc(tmp_path, art | {"kind": "demo"}, "demo").read_text()
    assert art["wall_seconds"] == 1448.5
    assert (
        "LLM `smollm2`, 40 training steps per system, 4 test examples; the whole demo took 24.1 minutes."
        in text_md
    )
    assert "| metric | seller | bag |" in text_md
    assert "| text/bleu4 | 3.5000 ± 1.0000 | 2.0000 ± 1.0000 |" in text_md
    assert "| grounding/generated/cites_reference_event | 0.7500 ± 0.2500 | 0.5000 ± 0.2500 |" in text_md
    assert "| text/rougeL | — | — |" in text_md  # a row asked for that no run has says so
    full = comparison_table(folders)  # the same cells as `seller-dist report` prints
    assert "| text/bleu4 | 3.5000 ± 1.0000 | 2.0000 ± 1.0000 |" in full


def test_experiment_steps_mean_is_over_the_seeds_every_grid_ran(tmp_path: Path) -> None:
    """Two budgets of one grid, the longer one run on fewer seeds: `seed=mean` averages each budget
    over the seeds both ran (here 0 and 1, not the 40-step grid's seed 2), `seed=1` shows one seed."""
    from seller_dist.config.experiment import HEADLINE_METRICS

    def art(steps: int, seeds: list[int], bleu: dict[int, float]) -> dict:
        runs = [
            {
                "system": "s",
                "seed": s,
                "step": steps,
                "train_seconds": 10.0,
                "metrics": {"text/bleu4": bleu[s]},
            }
            for s in seeds
        ]
        prov = {"command": "seller-dist experiment", "date": "2026-12-06T00:00:00+00:00", "commit": "0123abc"}
        return {
            "systems": ["s"],
            "runs": runs,
            "provenance": prov | {"tree": "clean", "machine": {"cpus": 2}},
        }

    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "a.json").write_text(
        json.dumps(art(40, [0, 1, 2], {0: 1.0, 1: 3.0, 2: 50.0}))
    )
    (tmp_path / "docs" / "bench" / "b.json").write_text(json.dumps(art(120, [0, 1], {0: 4.0, 1: 6.0})))
    specs = (
        "experiment_steps seed=mean docs/bench/a.json docs/bench/b.json",
        "experiment_steps seed=1 docs/bench/a.json docs/bench/b.json",
    )
    mean, one = (tables.render(spec, tmp_path) for spec in specs)
    dashes = " | —" * (len(HEADLINE_METRICS) - 1)
    assert mean.startswith("Mean ± std over seeds 0, 1.\n")
    assert (
        f"| s | 40 | 2.0000 ± 1.4142{dashes} |" in mean and f"| s | 120 | 5.0000 ± 1.4142{dashes} |" in mean
    )
    assert f"| s | 40 | 3.0000{dashes} | 10 |" in one and f"| s | 120 | 6.0000{dashes} | 10 |" in one


def test_the_learning_table_is_seller_over_bag_per_seed(tmp_path: Path) -> None:
    """tests/learning_seller_vs_bag.py --artifact: a row per seed, each cell SELLER / bag."""
    keys = (
        "attention_top_is_cited",
        "cites_reference_event",
        "mrr",
        "hr@10",
        "cites_history",
        "exact_acceptance",
    )

    def system(x: float) -> dict:
        return {k: x + i / 100 for i, k in enumerate(keys)}

    run = {
        "seed": 3,
        "seller": system(0.8),
        "bag": system(0.3),
        "reference_mrr": 0.9,
        "reference_exact_acceptance": 0.77,
    }
    prov = {
        "command": "python -m tests.learning_seller_vs_bag r --artifact a.json",
        "date": "2026-12-07T00:00:00+00:00",
    }
    prov |= {"commit": "0123456789abcdef", "tree": "clean", "machine": {"cpus": 2}}
    text = _doc(tmp_path, {"kind": "learning", "provenance": prov, "runs": [run]}, "learning").read_text()
    assert (
        "| 3 | 0.800 / 0.300 | 0.810 / 0.310 | 0.820 / 0.320 | 0.830 / 0.330 | 0.840 / 0.340 | 0.850 / 0.350 |"
        in text
    )
    assert "(The references: MRR 0.900, exact acceptance 0.770.)" in text


PROV = {
    "command": "seller-dist bench",
    "date": "2026-12-07T00:00:00+00:00",
    "commit": "0123456789abcdef",
    "tree": "clean",
    "machine": {"cpus": 2},
}


def test_scaling_train_check_puts_the_models_terms_beside_a_bench_train_run(tmp_path: Path) -> None:
    """docs/scaling.md's CPU check: F = 4 N_f + 6 N_t / (tokens per sample) by the model's
    `flops_per_token`, the efficiency against the run's measured peak, the model's all-gathered bytes
    per step (whole tensors: 2 N_f x 4 B + 2 N_t x 4 B) against the CommClock's over the steps run."""

    def result(mode: str, workers: int, comm: dict) -> dict:
        return {
            "mode": mode,
            "workers": workers,
            "samples": 10,
            "llm_tokens": 100,
            "frozen_params": 250_000,
            "trainable_params": 100_000,
            "tokens_per_s_per_worker": 10_000.0,
            "step_time_s": 0.1,
            "split_s": {"communication": 0.03},
            "comm_total_by_kind": comm,
        }

    comm = {
        "all_gather": {"seconds": 0.2, "calls": 40.0, "bytes": 5_600_000.0},
        "all_to_all": {"seconds": 0.0, "calls": 8.0, "bytes": 0.0},
    }
    settings = {
        "warmup_steps": 1,
        "measured_steps": 2,
        "peak_tflops_per_worker": 0.1,
        "peak_source": "a matmul",
    }
    art = {
        "provenance": PROV,
        "settings": settings,
        "results": [result("plain", 1, {}), result("ds", 2, comm)],
    }
    text = _doc(tmp_path, art, "scaling-train-check mode=ds").read_text()
    assert "Peak per worker 0.100 TFLOP/s (a matmul)." in text
    # F = 4 x 250,000 + 6 x 100,000 / 10 = 1.06 MFLOP; 10,000 tokens/s x F = 0.0106 TFLOP/s, 0.106 of peak
    assert "| plain | 1 | 250,000 | 100,000 | 10.0 | 1.060 | 10,000 | 0.0106 | 0.106 |" in text
    # model 2.8 MB per step; measured 5.6 MB over 1 + 2 + 1 steps run; 48 calls / 4; 0.2 s / 4
    assert "| ds | 2 | 2.80 | 1.40 | 0.50 | 12 | 50.0 | 30.0 | 100.0 |" in text
    assert "| ds | 2 | all_gather | 40 | 0.200 | 5.60 | 28.0 | 5.00 |" in text
    assert "| ds | 2 | all_to_all | 8 | 0.000 | 0.00 |  | 0.00 |" in text


def test_scaling_gpu_check_gives_each_runs_efficiency_by_the_models_flops(tmp_path: Path) -> None:
    """F = 4 N_f + 6 N_t / s + 6 L s H (attention included) times tokens/s over the peak, and that
    efficiency over the 0.45 the predictions assume."""
    run = {"variant": "eager", "micro_batch": 1, "seq_len": 100, "trainable_params": 1_000_000}
    art = {
        "device": "G",
        "frozen_params": 1_000_000_000,
        "llm": {"layers": 10, "hidden": 1000},
        "peak_tflops": 100.0,
        "runs": [run | {"tokens_per_s": 10_000.0}],
        "provenance_from_git_history": {"commit_that_added_this_file": "0123abc", "committed": "2026-11-29"},
    }
    text = _doc(tmp_path, art, "scaling-gpu-check").read_text()
    assert "Artifact 1: G, peak 100 TFLOP/s; frozen LLM N_f = 1,000,000,000, L = 10, H = 1000." in text
    # F = 4e9 + 6e6 / 100 + 6 x 10 x 100 x 1000 = 4.00606e9; x 10,000 tokens/s = 40.06 TFLOP/s
    assert "| 1 | eager | 1 | 100 | 1,000,000 | 4.01 | 10,000 | 40 | 0.401 | 0.89 |" in text


def _prep_artifact() -> dict:
    def run(events: int, wall: float) -> dict:
        return {
            "engine": "ray",
            "format": "csv",
            "events": events,
            "wall_s": wall,
            "cpus": 2,
            "exit_code": 0,
            "examples": events * 9 // 10,
            "cut_partitions": 16,
            "driver_peak_rss_mib": 250.0,
            "ray_worker_peak_rss_mib": 300.0,
            "ray_worker_private_mib": 150.0,
        }

    return {
        "provenance": PROV,
        "settings": {"prep_set": ["partition_max_events=1000"]},
        "results": [run(1000, 11.0), run(2000, 12.0), run(3000, 14.0)],
    }


def test_prep_fit_memory_and_1b_tables_from_a_bench_prep_run(tmp_path: Path) -> None:
    """`prep-fit`: wall = T0 + E k through the two largest sizes (k = 2 s / 1000 events, T0 = 8 s),
    k x 2 CPUs per event and the records per event; `prep-memory`: M = E / pme map tasks times P;
    `prep-1b`: `prep_cost` with that fit's CPU and records per event."""
    art = _prep_artifact()
    fit = _doc(tmp_path / "fit", art, "prep-fit").read_text()
    assert "| 0123456 | ray | csv | 2 | 2,000 / 3,000 | 12.0 / 14.0 | 2000.0 | 8.0 | 4000.0 | 0.900 |" in fit
    first_two = tables.render("prep-fit sizes=1000,2000 docs/bench/a.json", tmp_path / "fit")
    assert "| 1,000 / 2,000 | 11.0 / 12.0 | 1000.0 | 10.0 | 2000.0 |" in first_two

    memory = _doc(tmp_path / "memory", art, "prep-memory").read_text()
    assert "| 0123456 | 1,000 | disk | 3,000 | 16 | 48 | 250.0 | 300.0 | 150.0 |" in memory

    one_b = _doc(tmp_path / "1b", art, "prep-1b events=1e6 nodes=1,2").read_text()
    assert "4000.0 us of CPU and 0.900 records per event." in one_b
    # 1 node of 32 CPUs: P = max(8 x 32, 1e6 / 250,000) = 256; 0.004 s x 1e6 / 32 = 125 s of CPU;
    # 1e6 x 0.9 x 3,200 B at 1 GB/s = 2.9 s of upload; M x P x 32 B = 4 x 256 x 32 B
    assert "| 1 | 32 | 256 | 3,906 | 2.1 min | 0.08 GB + 0.08 GB | 0.0 GB | 3 s | 2.1 min |" in one_b
    assert "| 2 | 64 | 512 | 1,953 | 62 s | 0.04 GB + 0.04 GB | 0.0 GB | 1 s | 64 s |" in one_b


def test_soft_prompt_probe_table_has_a_row_per_checkpoint_and_hidden_part(tmp_path: Path) -> None:
    def variant(c: float) -> dict:
        return {"cites_history": c, "cites_reference_event": c / 2, "names_pointed_event": c / 4}

    run = {
        "model": {"pointer_tokens": 5},
        "pointer_on_reference_event": 0.62,
        "pointer_cuts_title": 1.0,
        "norm_mean": {"adapter": 9.918, "pointer": 2.744, "text_tokens": 2.765},
        "variants": {
            "hide_none": {**variant(0.12), "writes_pointer_prefix": 0.38},
            "hide_all": {**variant(0.4), "writes_pointer_prefix": 0.18},
        },
    }
    prov = {"command": "python -m tools.soft_prompt_probe", "date": "2026-12-07T00:00:00+00:00"}
    art = {"kind": "soft-prompt-probe", "provenance": {**prov, "commit": "0123456", "tree": "clean"}}
    text = _doc(tmp_path, {**art, "runs": {"seller-chat": run}}, "soft-prompt-probe").read_text()
    assert "| seller-chat | nothing (as evaluated) | 0.12 | 0.06 | 0.03 | 0.38 |" in text
    assert "| seller-chat | all | 0.40 | 0.20 | 0.10 | 0.18 |" in text
    assert "| seller-chat | 5 | 0.62 | 1.00 | 9.92 | 2.74 | 2.77 |" in text


def test_paired_compare_table_has_a_row_per_metric_and_one_per_system(tmp_path: Path) -> None:
    stat = {"pairs": 123, "rate_a": 0.252, "rate_b": 0.293, "a_only": 14, "b_only": 19}
    stat |= {"sign_test_p": 0.4869, "diff_ci95": [-0.13, 0.049]}
    attention = {
        "attention_on_cites": 27,
        "attention_on_not": 52,
        "attention_off_cites": 4,
        "attention_off_not": 40,
    }
    comparison = {"a": "seller", "b": "bag", "seeds": [0, 1, 2], "pooled": {"cites_reference_event": stat}}
    comparison["attention_vs_citing"] = {"seller": attention, "bag": dict.fromkeys(attention, 0)}
    prov = {"command": "python -m tools.paired_compare", "date": "2026-12-07T00:00:00+00:00"}
    art = {"kind": "paired-compare", "provenance": {**prov, "commit": "0123456", "tree": "clean"}}
    text = _doc(tmp_path, {**art, "comparisons": [comparison]}, "paired-compare").read_text()
    assert (
        "| seller vs bag | cites_reference_event | 123 | 0.252 | 0.293 | 14 | 19 | 0.487 | [-0.130, +0.049] |"
        in text
    )
    assert "| seller | 27 | 52 | 4 | 40 | 0.34 |" in text
    assert "| bag |" not in text  # no attention on a reference event counted: no row
    assert "Pooled over seeds 0, 1, 2" in text
    # with --text: a row per text metric, BLEU-4 without per-example wins, the per-seed differences
    bleu = {"pairs": 80, "mean_a": 3.5, "mean_b": 1.25, "a_better": None, "b_better": None}
    rouge = {"pairs": 80, "mean_a": 19.0, "mean_b": 16.5, "a_better": 50, "b_better": 30}
    bleu |= {"p": 0.01, "diff_ci95": [0.5, 4.0]}
    rouge |= {"p": 0.033, "diff_ci95": [0.25, 4.75]}
    seed = {"bleu4": {**bleu, "mean_a": 4.0}, "rougeL": {**rouge, "mean_b": 20.0}}
    comparison["text"] = {"pooled": {"bleu4": bleu, "rougeL": rouge}, "per_seed": {"1": seed, "0": seed}}
    comparison["text"]["same_text"] = {"0": {"pairs": 80, "identical": 3, "same_opening": 59}}
    text = _doc(tmp_path / "text", {**art, "comparisons": [comparison]}, "paired-compare").read_text()
    assert (
        "| seller vs bag | bleu4 | 80 | 3.50 | 1.25 | — | — | 0.010 | [+0.50, +4.00] | +2.75 / +2.75 |"
        in text
    )
    assert (
        "| seller vs bag | rougeL | 80 | 19.00 | 16.50 | 50 | 30 | 0.033 | [+0.25, +4.75] | -1.00 / -1.00 |"
        in text
    )
    assert "| seller vs bag | 0 | 80 | 3 | 59 |" in text
    assert "neither explanation names" not in text  # no such subset in the artifact: no block
    # the pairs where neither explanation names a history item: their own rows, no per-seed column
    comparison["text"]["neither_cites_history"] = {"rougeL": {**rouge, "pairs": 41, "mean_a": 17.0}}
    text = _doc(tmp_path / "uncited", {**art, "comparisons": [comparison]}, "paired-compare").read_text()
    assert "Only the pairs where neither explanation names a history item:" in text
    assert "| seller vs bag | rougeL | 41 | 17.00 | 16.50 | 50 | 30 | 0.033 | [+0.25, +4.75] |\n" in text
