"""Real and templated references scored apart (issue 18, item 2) on a prepared events dataset that
has both: counts per group, every text and grounding metric per group equal to scoring that group's
examples alone and to hand-computed BLEU, real rows first in the report, `eval.references`
restricting the eval (and generation) to one group, a clear error for an empty group."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from seller_dist.config import ConfigError, EvalConfig, SimulatorConfig, TextMetricsConfig, load_config
from seller_dist.data.shards import Manifest
from seller_dist.eval import job
from seller_dist.eval.generations import Generation, GenerationsError, parse_line, write_generations
from seller_dist.eval.references import EmptyReferenceGroup
from seller_dist.eval.report import comparison_table, flat_metrics, markdown, write_report
from seller_dist.eval.scoring import load_split, score_generations
from seller_dist.eval.text_metrics import tokenize
from tests.eval_helpers import prep_mixed, shared_encoder

CFG = EvalConfig(text=TextMetricsConfig(bootstrap_samples=20), simulator=SimulatorConfig(enabled=False))
REAL_SOURCES = {"review", "reference"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prep_mixed(tmp_path_factory.mktemp("refs") / "mixed")


@pytest.fixture(scope="module")
def records(mixed: str):
    return load_split(Manifest.load(mixed), "test", CFG)


def generated_for(r) -> str:
    """Real references copied; templated ones cut to their first half (n-gram precision 1, so
    BLEU-1 = BLEU-4 = the brevity penalty, computable by hand)."""
    if r.explanation_source in REAL_SOURCES:
        return r.explanation
    tokens = tokenize(r.explanation)
    return " ".join(tokens[: len(tokens) // 2 + 1])


def gens_of(records) -> list[Generation]:
    return [
        Generation(
            r.key,
            r.user_id,
            r.item_id,
            r.explanation,
            generated_for(r),
            [],
            r.meta,
            "seller",
            r.explanation_source,
        )
        for r in records
    ]


def brevity_bleu(records) -> float:
    """Corpus BLEU (any order <= 5) when every generation is a prefix of its reference: 100 * BP."""
    hyp = sum(len(tokenize(generated_for(r))) for r in records)
    ref = sum(len(tokenize(r.explanation)) for r in records)
    return 100.0 * (1.0 if hyp >= ref else math.exp(1 - ref / hyp))


def cites_history_by_hand(texts, records) -> float:
    hits = [
        any(h.title.lower() in t.lower() or h.item_id in t.split() for h in r.history)
        for t, r in zip(texts, records, strict=True)
    ]
    return sum(hits) / len(hits)


def score(path: str, data: str, **kw) -> dict:
    return score_generations(path, data, replace(CFG, **kw), shared_encoder())


@pytest.fixture(scope="module")
def scored_all(mixed: str, records, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    path = str(tmp_path_factory.mktemp("gens") / "all.jsonl")
    write_generations(path, gens_of(records))
    return path, score(path, mixed)


def test_the_dataset_has_both_kinds(records):
    sources = Counter(r.explanation_source for r in records)
    assert sources == {"review": 24, "template": 24}


def test_counts_per_group(scored_all, records):
    _, res = scored_all
    real = sum(r.explanation_source in REAL_SOURCES for r in records)
    assert res["references"] == {
        "mode": "all",
        "examples": {"real": real, "template": len(records) - real},
        "explanation_sources": {"review": real, "template": len(records) - real},
        "in_generations_file": {"real": real, "template": len(records) - real},
    }
    assert list(res["by_reference"]) == ["real", "template"]
    assert res["by_reference"]["real"]["num_examples"] == 24
    assert res["by_reference"]["template"]["num_examples"] == 24
    assert res["num_examples"] == 48


def test_group_metrics_match_hand_computed_values(scored_all, records):
    _, res = scored_all
    real = [r for r in records if r.explanation_source in REAL_SOURCES]
    tmpl = [r for r in records if r.explanation_source == "template"]
    by = res["by_reference"]
    rt, tt = by["real"]["text"], by["template"]["text"]
    assert rt["bleu1"]["mean"] == pytest.approx(100.0) and rt["bleu4"]["mean"] == pytest.approx(100.0)
    assert rt["rougeL"]["mean"] == pytest.approx(100.0)
    assert rt["bertscore_f1"]["mean"] == pytest.approx(1.0, abs=1e-5)
    expected_tmpl = brevity_bleu(tmpl)
    assert 5.0 < expected_tmpl < 60.0  # the cut generations really are short
    assert tt["bleu1"]["mean"] == pytest.approx(expected_tmpl, abs=1e-6)
    assert tt["bleu4"]["mean"] == pytest.approx(expected_tmpl, abs=1e-6)
    # the overall row mixes both, and differs from each group
    assert res["text"]["bleu1"]["mean"] == pytest.approx(brevity_bleu(records), abs=1e-6)
    assert expected_tmpl < res["text"]["bleu1"]["mean"] < 100.0
    # grounding per group against a plain substring check
    for group, recs in (("real", real), ("template", tmpl)):
        g = by[group]["grounding"]
        assert g["reference"]["cites_history"]["mean"] == pytest.approx(
            cites_history_by_hand([r.explanation for r in recs], recs)
        )
        assert g["generated"]["cites_history"]["mean"] == pytest.approx(
            cites_history_by_hand([generated_for(r) for r in recs], recs)
        )
    # reviews name the target item, templates cite a history event: the kinds really differ
    assert by["real"]["grounding"]["reference"]["cites_history"]["mean"] == 0.0
    assert by["template"]["grounding"]["reference"]["cites_history"]["mean"] == 1.0


def test_each_group_scores_as_its_examples_alone(scored_all, mixed: str, records, tmp_path: Path):
    path, res = scored_all
    for group, keep in (("real", REAL_SOURCES), ("template", {"template"})):
        alone = str(tmp_path / f"{group}.jsonl")
        write_generations(alone, [g for g in gens_of(records) if g.reference_source in keep])
        solo = score(alone, mixed)
        restricted = score(path, mixed, references=group)
        for other in (solo, restricted):
            assert other["text"] == res["by_reference"][group]["text"]
            assert other["grounding"] == res["by_reference"][group]["grounding"]
        # eval.references=<group> scores only that group, utility included
        assert restricted["num_examples"] == 24 and list(restricted["by_reference"]) == [group]
        assert restricted["references"]["examples"][group] == 24
        assert restricted["references"]["in_generations_file"] == {"real": 24, "template": 24}
        assert restricted["retrieval"] == solo["retrieval"]
        assert restricted["retrieval"]["generated"]["mrr"]["n"] == 24


def test_report_puts_real_rows_first(scored_all, tmp_path: Path):
    _, res = scored_all
    names = list(flat_metrics(res))
    assert names[0] == "by_reference/real/num_examples"
    last_real = max(i for i, n in enumerate(names) if n.startswith("by_reference/real/"))
    first_tmpl = min(i for i, n in enumerate(names) if n.startswith("by_reference/template/"))
    last_tmpl = max(i for i, n in enumerate(names) if n.startswith("by_reference/template/"))
    assert last_real < first_tmpl and last_tmpl < names.index("text/bleu1")
    assert "by_reference/real/grounding/reference/cites_history" in names
    flat = flat_metrics(res)
    assert (
        flat["by_reference/template/text/bleu4"][0]
        == res["by_reference"]["template"]["text"]["bleu4"]["mean"]
    )
    md = markdown(res)
    assert "| metric | real (24) | template (24) | all (48) |" in md
    assert "24 real, 24 template references" in md
    assert md.index("## Reference kinds") < md.index("## Text quality") < md.index("## Sequence grounding")
    write_report(res, str(tmp_path / "run"))
    table = comparison_table([str(tmp_path / "run")])
    assert table.splitlines()[2] == "| by_reference/real/num_examples | 24.0000 |"
    assert "| by_reference/real/text/bleu4 | 100.0000 ± 0.0000 |" in table


def test_an_empty_group_is_a_clear_error(mixed: str, records, tmp_path: Path):
    template_only = prep_mixed(tmp_path / "tmpl", with_text=False)
    recs = load_split(Manifest.load(template_only), "test", CFG)
    path = str(tmp_path / "t.jsonl")
    write_generations(path, gens_of(recs))
    res = score(path, template_only)
    assert res["by_reference"]["real"] == {"num_examples": 0}
    assert res["by_reference"]["template"]["num_examples"] == 48
    assert res["by_reference"]["template"]["text"] == res["text"]
    flat = flat_metrics(res)
    assert "by_reference/real/text/bleu4" not in flat
    # one kind covers every example: only its count is listed, its metrics are the overall rows
    assert flat["by_reference/template/num_examples"][0] == 48
    assert not [n for n in flat if n.startswith("by_reference/template/") and not n.endswith("num_examples")]
    assert "| metric | template (48) | all (48) |" in markdown(res)
    with pytest.raises(
        EmptyReferenceGroup, match=r"eval.references=real: .* has no example with a real reference"
    ):
        score(path, template_only, references="real")
    # the eval job says so in preflight, before any worker loads an LLM
    cfg = load_config(EvalConfig, None, [f"data={template_only}", "references=real"])
    with pytest.raises(
        job.EvalPreflightError,
        match=r"split 'test' of .*tmpl has no example with a real reference .* \{'template': 48\}",
    ):
        job.check_reference_group(cfg, Manifest.load(template_only))
    job.check_reference_group(replace(cfg, data=mixed), Manifest.load(mixed))  # has real ones: fine


def test_config_and_generations_file_checks(mixed: str, records, tmp_path: Path):
    with pytest.raises(ConfigError, match="references"):
        load_config(EvalConfig, None, ["references=reviews"])
    g = gens_of(records[:1])[0]
    line = json.loads(g.to_json())
    assert line["reference_source"] == records[0].explanation_source
    with pytest.raises(GenerationsError, match=r"field 'reference_source': 'handmade' is not one of"):
        parse_line(json.dumps({**line, "reference_source": "handmade"}), "g.jsonl", 1)
    del line["reference_source"]  # files written before the field existed still read
    assert parse_line(json.dumps(line), "g.jsonl", 1).reference_source == ""
    wrong = "template" if g.reference_source == "review" else "review"
    path = str(tmp_path / "wrong.jsonl")
    write_generations(path, [replace(g, reference_source=wrong)])
    with pytest.raises(
        GenerationsError, match=f"says its reference is '{wrong}', the record's explanation_source"
    ):
        score(path, mixed)


def test_generation_keeps_only_the_requested_group(mixed: str, records, tiny_llm_dir, tmp_path: Path):
    """eval.references=real generates for the real-reference examples only, batch plan unchanged."""
    import torch

    from seller_dist.config import GenerationOptions
    from seller_dist.data.split_batches import plan_batches, worker_share
    from seller_dist.eval.generate import ExplanationGenerator
    from seller_dist.train.export import load_trained
    from tests.eval_job_helpers import write_checkpoint_for

    torch.set_num_threads(1)
    ckpt = write_checkpoint_for(mixed, tiny_llm_dir, str(tmp_path / "run" / "checkpoints"), ep_size=1)
    gen = GenerationOptions(batch_size=8, max_new_tokens=4)
    g = ExplanationGenerator(load_trained(ckpt), mixed, "seller", gen)
    plan = plan_batches(g.manifest, "test", gen.batch_size)
    by_source = {r.key: r.explanation_source for r in records}
    everything = g.run("test", plan)
    assert {x.key: x.reference_source for x in everything.generations} == by_source
    real = g.run("test", plan, "real")
    assert sorted(x.key for x in real.generations) == sorted(k for k, s in by_source.items() if s == "review")
    split = [g.run("test", worker_share(plan, w, 2), "real") for w in range(2)]
    assert sorted(x.to_json() for p in split for x in p.generations) == sorted(
        x.to_json() for x in real.generations
    )
