"""The learned simulator is marked UNINFORMATIVE (issue 18, item 4) when its hold-out AUC or the
spread of its acceptance between reference, generic and no explanation is below the configured
thresholds: the rule on fixed numbers, then end to end on a prepared synthetic dataset (flag in
report.json, a warning in report.md and in the side-by-side table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seller_dist.config import ConfigError, EvalConfig, SimulatorConfig, TextMetricsConfig, load_config
from seller_dist.data.shards import Manifest
from seller_dist.eval.generations import Generation, write_generations
from seller_dist.eval.report import comparison_table, flat_metrics, markdown, write_report
from seller_dist.eval.scoring import load_split, score_generations
from seller_dist.eval.simulator import informativeness
from tests.eval_helpers import shared_encoder
from tests.train_helpers import prep_small


def learned(auc: float, reference: float, generic: float, none: float) -> dict:
    stat = lambda m: {"mean": m, "std": 0.1, "n": 10}  # noqa: E731
    return {
        "holdout_auc": auc,
        "acceptance": {
            "generated": stat(0.9),
            "reference": stat(reference),
            "generic": stat(generic),
            "none": stat(none),
        },
    }


def test_the_rule_on_fixed_numbers():
    # Yelp as measured: AUC 0.60 -> uninformative whatever the spread
    v = informativeness(learned(0.60, 0.7, 0.5, 0.5), 0.7, 0.02)
    assert v["informative"] is False
    assert v["reasons"] == ["hold-out AUC 0.6000 < simulator.min_holdout_auc 0.7"]
    assert v["acceptance_spread"] == pytest.approx(0.2)
    # a good AUC but acceptance hardly moves with the explanation (the generated one is not counted)
    v = informativeness(learned(0.85, 0.589, 0.580, 0.579), 0.7, 0.02)
    assert v["informative"] is False and v["acceptance_spread"] == pytest.approx(0.010)
    assert v["reasons"] == [
        "acceptance spread 0.0100 (shown reference 0.5890, generic 0.5800, none 0.5790) "
        "< simulator.min_acceptance_spread 0.02"
    ]
    both = informativeness(learned(0.52, 0.5, 0.5, 0.5), 0.7, 0.02)
    assert len(both["reasons"]) == 2 and both["acceptance_spread"] == 0.0
    ok = informativeness(learned(0.7, 0.62, 0.60, 0.60), 0.7, 0.02)  # on the thresholds: informative
    assert ok["informative"] is True and ok["reasons"] == []
    nan_auc = informativeness(learned(float("nan"), 0.9, 0.1, 0.1), 0.7, 0.02)
    assert nan_auc["informative"] is False
    only_none = {"holdout_auc": 0.9, "acceptance": {"none": {"mean": 0.5, "std": 0.0}}}
    v = informativeness(only_none, 0.7, 0.02)
    assert v["acceptance_spread"] is None and "not measured" in v["reasons"][0]


def test_thresholds_are_validated():
    cfg = load_config(
        EvalConfig, None, ["simulator.min_holdout_auc=0.8", "simulator.min_acceptance_spread=0.05"]
    )
    assert (cfg.simulator.min_holdout_auc, cfg.simulator.min_acceptance_spread) == (0.8, 0.05)
    assert (SimulatorConfig().min_holdout_auc, SimulatorConfig().min_acceptance_spread) == (0.7, 0.02)
    with pytest.raises(ConfigError, match=r"eval.simulator.min_holdout_auc must be in \[0.5, 1\]"):
        load_config(EvalConfig, None, ["simulator.min_holdout_auc=0.3"])
    with pytest.raises(ConfigError, match=r"eval.simulator.min_acceptance_spread must be in \[0, 1\]"):
        load_config(EvalConfig, None, ["simulator.min_acceptance_spread=-0.1"])


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("sim_mark")
    data = str(root / "data")
    prep_small(data)
    recs = load_split(Manifest.load(data), "test", EvalConfig())
    path = str(root / "gens.jsonl")
    write_generations(
        path,
        [
            Generation(r.key, r.user_id, r.item_id, r.explanation, r.explanation, [], r.meta, "seller")
            for r in recs
        ],
    )
    return data, path


def _score(scored: tuple[str, str], **sim: float) -> dict:
    cfg = EvalConfig(
        text=TextMetricsConfig(bertscore=False, bootstrap_samples=10),
        simulator=SimulatorConfig(epochs=50, exact=False, **sim),
    )
    return score_generations(scored[1], scored[0], cfg, shared_encoder())


def test_the_report_flags_what_the_thresholds_say(scored, tmp_path: Path):
    res = _score(scored)
    lr = res["simulator"]["learned"]
    acc = lr["acceptance"]
    spread = max(acc[c]["mean"] for c in ("reference", "generic", "none")) - min(
        acc[c]["mean"] for c in ("reference", "generic", "none")
    )
    v = lr["informativeness"]
    assert v["acceptance_spread"] == pytest.approx(spread) and v["holdout_auc"] == lr["holdout_auc"]
    assert lr["informative"] == (lr["holdout_auc"] >= 0.7 and spread >= 0.02)
    auc = lr["holdout_auc"]
    # thresholds just above and just below the measured values flip the flag, and only the flag
    low = _score(scored, min_holdout_auc=max(0.5, auc - 0.05), min_acceptance_spread=max(0.0, spread - 0.005))
    high = _score(scored, min_holdout_auc=min(1.0, auc + 0.01))
    assert low["simulator"]["learned"]["informative"] is True
    assert high["simulator"]["learned"]["informative"] is False
    assert high["simulator"]["learned"]["informativeness"]["reasons"][0].startswith(
        f"hold-out AUC {auc:.4f} < simulator.min_holdout_auc"
    )
    assert low["simulator"]["learned"]["acceptance"] == high["simulator"]["learned"]["acceptance"] == acc
    # the flag in report.json, the warning in report.md and in the side-by-side table
    write_report(low, str(tmp_path / "ok"))
    write_report(high, str(tmp_path / "bad"))
    back = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert back["simulator"]["learned"]["informative"] is False
    assert flat_metrics(high)["simulator/learned/informative"][0] == 0.0
    assert flat_metrics(low)["simulator/learned/informative"][0] == 1.0
    md = markdown(high)
    assert "**Warning: learned simulator UNINFORMATIVE" in md and "learned simulator (UNINFORMATIVE" in md
    assert "UNINFORMATIVE" not in markdown(low)
    table = comparison_table([str(tmp_path / "ok"), str(tmp_path / "bad")])
    assert table.count("UNINFORMATIVE") == 1
    assert table.splitlines()[-1].startswith("**Warning: seller (bad): learned simulator UNINFORMATIVE")
