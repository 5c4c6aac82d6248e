"""Oracle explainers (seller_dist.eval.oracles) on the packaged synthetic dataset: what each utility
metric CAN reward before any model is trained.

The numbers are the protocol's, not a model's: perfect explanations that cite the most recent related
event (the reference) against perfect explanations that cite another related event, each worded right
for the event it cites. Retrieval cannot tell order apart on this source (an order-free oracle scores
at least as well as the reference); the exact simulator, which rewards citing the most recent related
event, can. docs/evaluation.md ("Headroom for order") records the full table.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from seller_dist.config import EvalConfig, load_config
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.shards import Manifest
from seller_dist.data.synthetic_reference import PreparedItems
from seller_dist.eval import oracles
from seller_dist.eval.scoring import load_split
from tests.eval_helpers import shared_encoder
from tests.train_helpers import PREP_SYNTHETIC

ORDER_FREE = ("random_related", "max_match", "oldest_related")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """The packaged synthetic prep (300 users, 300 test examples) and every oracle scored on it."""
    from data_prep.pipeline import run_prep
    from seller_dist.config import PrepConfig

    root = tmp_path_factory.mktemp("oracles")
    data = str(root / "data")
    run_prep(load_config(PrepConfig, PREP_SYNTHETIC, [f"output={data}", "overwrite=true"]))
    cfg = load_config(EvalConfig, None, [f"data={data}", "text.bertscore=false", "simulator.learned=false"])
    results = oracles.run_oracles(cfg, str(root / "out"), list(oracles.POLICIES), encoder=shared_encoder())
    return data, root / "out", results


def mean(results: dict, *path: str) -> float:
    for p in path:
        results = results[p]
    return results["mean"]


def test_reference_oracle_reproduces_every_reference_and_grounds_perfectly(packaged):
    _, out, results = packaged
    lines = [json.loads(x) for x in (out / "oracle-reference" / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 300 and all(g["generated"] == g["reference"] for g in lines)
    assert {g["system"] for g in lines} == {"oracle-reference"}
    r = results["reference"]
    assert mean(r, "text", "bleu4") == pytest.approx(100.0)
    assert mean(r, "grounding", "generated", "cites_reference_event") == 1.0
    assert mean(r, "grounding", "attention_top_is_cited") == 1.0
    assert (out / "oracle-reference" / "report.json").exists()


def test_order_free_oracles_cite_other_events_worded_for_them(packaged):
    _, _, results = packaged
    for policy in ORDER_FREE:
        cites = mean(results[policy], "grounding", "generated", "cites_reference_event")
        assert 0.3 < cites < 0.7, (policy, cites)  # right only where the pick is the most recent one
        assert mean(results[policy], "grounding", "generated", "cites_history") > 0.85  # never invented


def test_retrieval_cannot_reward_order_on_this_source_but_the_exact_simulator_does(packaged):
    """Retrieval: the best order-free oracle retrieves the target at least as well as the reference,
    and a blind pick is within 0.02 of it, so no margin for SELLER over `bag` on retrieval follows from
    reading the order. The exact simulator rewards the most recent related event: the reference leads
    every order-free oracle by more than 0.04 of acceptance."""
    _, _, results = packaged
    mrr = {p: mean(results[p], "retrieval", "generated", "mrr") for p in results}
    assert mrr["max_match"] >= mrr["reference"], mrr
    assert abs(mrr["random_related"] - mrr["reference"]) < 0.02, mrr
    assert mrr["no_history"] > 0.99, mrr  # the "new direction" wording names the target itself
    accept = {p: mean(results[p], "simulator", "exact", "acceptance", "generated") for p in results}
    assert all(accept["reference"] > accept[p] + 0.04 for p in ORDER_FREE), accept


def test_errors_name_the_policy_the_source_and_the_record(packaged, tmp_path):
    data, _, _ = packaged
    cfg = load_config(EvalConfig, None, [f"data={data}"])
    with pytest.raises(ValueError, match=r"unknown oracle policies \['latest'\]: choose from"):
        oracles.run_oracles(cfg, str(tmp_path), ["reference", "latest"])
    manifest = Manifest.load(data)
    records = load_split(manifest, "test", cfg, limit=3)
    catalog = PreparedItems.from_catalog(ItemCatalog.load(data, manifest))
    tampered = [records[0], dataclasses.replace(records[1], explanation="Because you like it.")]
    with pytest.raises(ValueError, match=rf"record {records[1].key}: .*field 'explanation'"):
        oracles.oracle_generations(tampered, catalog, "reference")
    with pytest.raises(ValueError, match="unknown oracle policy 'latest'"):
        oracles.oracle_generations(records, catalog, "latest")
    # seeded per record key: the same picks every run, other picks with another seed
    draws = [
        oracles.oracle_generations(load_split(manifest, "test", cfg), catalog, "random_related", s)
        for s in (0, 0, 1)
    ]
    assert draws[0] == draws[1] and draws[0] != draws[2]
    other = tmp_path / "other"
    other.mkdir()
    m = json.loads(open(f"{data}/manifest.json").read())
    m["source"]["name"] = "yelp"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="oracles need the synthetic source's template; .* source 'yelp'"):
        oracles.run_oracles(dataclasses.replace(cfg, data=str(other)), str(tmp_path / "o"), ["reference"])


def test_cli_prints_the_oracles_side_by_side_on_the_first_limit_records(packaged, tmp_path, capsys):
    from seller_dist.cli import main

    data, _, _ = packaged
    out = tmp_path / "cli"
    argv = ["oracles", "--data", data, "--out", str(out), "--policies", "reference,no_history"]
    argv += ["--set", "text.bertscore=false", "--set", "simulator.learned=false", "--set", "limit=20"]
    assert main([*argv, "--artifact", str(tmp_path / "oracles.json")]) == 0
    table = capsys.readouterr().out
    assert "| metric | oracle-reference (oracle-reference) | oracle-no_history (oracle-no_history) |" in table
    assert "| retrieval/generated/mrr |" in table
    for policy in ("reference", "no_history"):
        assert len((out / f"oracle-{policy}" / "generations.jsonl").read_text().splitlines()) == 20
    # --artifact: the reports the table showed, the dataset's identity and the run's provenance, which
    # `./launch.sh tables` renders as the same rows (kind `oracles`)
    from seller_dist.data.shards import Manifest
    from tools import doc_tables as tables

    art = json.loads((tmp_path / "oracles.json").read_text())
    assert [r["label"] for r in art["runs"]] == ["oracle-reference", "oracle-no_history"]
    assert art["runs"][0]["report"] == json.loads((out / "oracle-reference" / "report.json").read_text())
    assert art["dataset_manifest_sha256"] == Manifest.load(data).sha256() and art["limit"] == 20
    assert {"commit", "tree", "command", "machine"} <= set(art["provenance"])
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "o.json").write_text(json.dumps(art))
    rendered = tables.render("oracles metrics=retrieval/generated/mrr docs/bench/o.json", tmp_path)
    assert rendered.startswith("20 'test' examples of the synthetic source's dataset (manifest sha256 ")
    mrr = [line for line in table.splitlines() if line.startswith("| retrieval/generated/mrr |")]
    assert mrr and mrr[0].replace(" (oracle-reference)", "").replace(" (oracle-no_history)", "") in rendered
