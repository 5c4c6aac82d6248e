"""Eval generation without Ray: batches are planned from the split alone, so any split of the plan
across workers gives the same generations (greedy and sampled); supporting events follow the
fusion attention; preflight rejects a wrong checkpoint, dataset or split with a message that says which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seller_dist.config import EvalConfig, GenerationOptions, load_config
from seller_dist.data.schema import ExampleRecord, HistoryEvent
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import plan_batches, worker_share
from seller_dist.eval import job
from seller_dist.eval.generate import ExplanationGenerator, supporting_events
from seller_dist.train.export import export, load_trained
from tests.eval_job_helpers import write_checkpoint_for
from tests.tiny_llm import build_tiny_llm
from tests.train_helpers import prep_small


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory, tiny_llm_dir):
    root = tmp_path_factory.mktemp("eval_gen")
    data = str(root / "data")
    prep_small(data)
    ckpt = write_checkpoint_for(data, tiny_llm_dir, str(root / "run" / "checkpoints"), ep_size=2)
    return {"root": root, "data": data, "ckpt": ckpt, "llm": tiny_llm_dir}


def test_plan_cuts_batches_inside_shards_and_honours_limit(eval_setup):
    m = Manifest.load(eval_setup["data"])
    counts = [int(s["count"]) for s in m.shards("test")]
    plan = plan_batches(m, "test", 7)
    assert [b.index for b in plan] == list(range(len(plan)))
    assert sum(b.stop - b.start for b in plan) == sum(counts)
    assert all(0 < b.stop - b.start <= 7 for b in plan)
    limited = plan_batches(m, "test", 7, limit=10)
    assert sum(b.stop - b.start for b in limited) == 10
    assert [(b.shard, b.start, b.stop) for b in limited] == [(0, 0, 7), (0, 7, 10)]
    assert worker_share(plan, 1, 3) == plan[1::3]


@pytest.mark.parametrize("do_sample", [False, True])
def test_generations_do_not_depend_on_how_the_plan_is_split(eval_setup, do_sample):
    torch.set_num_threads(1)
    trained = load_trained(eval_setup["ckpt"])
    gen = GenerationOptions(batch_size=4, max_new_tokens=8, do_sample=do_sample, top_p=0.9, seed=3)
    g = ExplanationGenerator(trained, eval_setup["data"], "seller", gen)
    plan = plan_batches(g.manifest, "test", gen.batch_size, limit=16)
    whole = g.run("test", plan)
    halves = [g.run("test", worker_share(plan, r, 2)) for r in range(2)]
    key = lambda x: x.key  # noqa: E731
    a = [x.to_json() for x in sorted(whole.generations, key=key)]
    b = [x.to_json() for x in sorted(halves[0].generations + halves[1].generations, key=key)]
    assert len(a) == 16 and a == b
    assert whole.new_tokens == halves[0].new_tokens + halves[1].new_tokens
    assert sum(whole.expert_tokens) == 16 * trained.model.adapter_tokens * trained.model.top_k  # whole tokens
    assert [x + y for x, y in zip(*(h.expert_tokens for h in halves), strict=True)] == pytest.approx(
        whole.expert_tokens
    )
    assert any(x.generated for x in whole.generations)
    first = whole.generations[0]
    assert 0 < len(first.supporting_events) <= gen.supporting_events


def test_static_decode_gives_the_eval_job_the_same_generations(eval_setup):
    """eval.generation.decode=static (+ compile, traced by dynamo without inductor here): the same
    generations file lines as the default decoding, the last short batch padded to batch_size rows."""
    torch.set_num_threads(1)
    trained = load_trained(eval_setup["ckpt"])
    lines = {}
    for decode, compiled in (("dynamic", False), ("static", False), ("static", True)):
        gen = GenerationOptions(batch_size=4, max_new_tokens=8, decode=decode, compile=compiled)
        g = ExplanationGenerator(trained, eval_setup["data"], "seller", gen)
        if compiled:
            g.decoder.backend, g.decoder.fullgraph = "eager", True
        part = g.run("test", plan_batches(g.manifest, "test", gen.batch_size, limit=10))
        lines[(decode, compiled)] = [x.to_json() for x in part.generations]
        assert g.seller.model.llm.decoder is g.decoder  # FrozenLLM.generate decodes through it
        if decode == "static":
            assert g.decoder.compile_failed is None
            assert g.decoder._cache_key[0] == (4 if compiled else 2)  # limit 10: batches of 4, 4, 2
    assert len(lines[("dynamic", False)]) == 10
    assert lines[("static", False)] == lines[("dynamic", False)] == lines[("static", True)]


def backend_that_cannot_compile(gm, example_inputs):
    """A torch.compile backend that refuses the graph: dynamo raises BackendCompilerFailed."""
    raise NotImplementedError("no kernel for this graph on this stack")


def test_a_decode_step_that_does_not_compile_is_decoded_eagerly_and_reported(eval_setup, tmp_path):
    """generation.compile=true on a stack that cannot compile the step: every worker decodes eagerly
    (the same generations as without compile), and the report says so (generation.compile_fallback
    in report.json, a warning in report.md); without a fallback the field is null, no warning."""
    from seller_dist.eval.report import write_report

    torch.set_num_threads(1)
    trained = load_trained(eval_setup["ckpt"])
    reports = {}
    for compiled in (False, True):
        gen = GenerationOptions(batch_size=4, max_new_tokens=8, decode="static", compile=compiled)
        g = ExplanationGenerator(trained, eval_setup["data"], "seller", gen)
        if compiled:
            g.decoder.backend = backend_that_cannot_compile
        plan = plan_batches(g.manifest, "test", gen.batch_size, limit=12)
        parts = [g.run("test", worker_share(plan, r, 2)) for r in range(2)]  # two workers' parts
        gens, _, stats = job.gather_parts(parts, len(plan), wall=1.0)
        results = {"system": "seller", "num_examples": len(gens), "generation": {**vars(gen), **stats}}
        paths = write_report(results, str(tmp_path / f"compile-{compiled}"))
        reports[compiled] = (
            [x.to_json() for x in gens],
            json.loads(Path(paths["json"]).read_text())["generation"],
            Path(paths["markdown"]).read_text(),
        )
    (eager, eager_gen, eager_md), (fell_back, gen_json, md) = reports[False], reports[True]
    assert len(eager) == 12 and fell_back == eager
    reason = "BackendCompilerFailed: NotImplementedError: no kernel for this graph on this stack"
    assert gen_json["compile"] is True and gen_json["compile_fallback"] == reason  # both workers, once
    assert f"decoded without compile (same tokens, eager speed): {reason}**" in md
    assert eager_gen["compile_fallback"] is None and "did not compile" not in eager_md


def test_supporting_events_are_the_most_attended_real_events():
    hist = [
        HistoryEvent(item_id=f"i{k}", item_idx=k + 1, timestamp=k, action="view", title=f"T{k}")
        for k in range(3)
    ]
    rec = ExampleRecord("k", "u", "i9", 9, 10, hist, {}, "Target", "ref", "test")
    att = torch.tensor([0.0, 0.0, 0.5, 0.2, 0.3])  # L=5, left padded: columns 2..4 are i0, i1, i2
    ev = supporting_events(rec, att, 5, 2)
    assert [(e.offset, e.item_id, e.title) for e in ev] == [(2, "i0", "T0"), (0, "i2", "T2")]
    assert [e.weight for e in ev] == pytest.approx([0.5, 0.3])
    assert supporting_events(rec, att, 5, 0) == []


def test_export_folder_and_checkpoint_give_the_same_weights(eval_setup, tmp_path):
    out = export(eval_setup["ckpt"], tmp_path / "export")
    a, b = load_trained(eval_setup["ckpt"]), load_trained(str(out))
    assert a.model == b.model and a.vocab == b.vocab and a.step == b.step == 5
    assert sorted(a.weights) == sorted(b.weights)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert a.manifest_sha256 == b.manifest_sha256 and a.train_config == b.train_config
    runs = str(Path(eval_setup["ckpt"]).parent)
    assert load_trained(runs).source == eval_setup["ckpt"]  # a checkpoints folder: the newest


# ----------------------------------------------------------------------------------- preflight
def cfg_for(setup, *overrides: str) -> EvalConfig:
    return load_config(EvalConfig, None, [f"data={setup['data']}", f"checkpoint={setup['ckpt']}", *overrides])


def preflight(cfg: EvalConfig):
    manifest = job.load_manifest(cfg)
    return job.resolve_model(cfg, manifest)


def test_preflight_accepts_the_right_checkpoint(eval_setup):
    trained = preflight(cfg_for(eval_setup, "expect_model.history_encoder=transformer"))
    assert trained.model.ep_size == 1 and any(k.startswith("moe.") for k in trained.weights)


def test_missing_checkpoint_fails_at_once(eval_setup):
    missing = str(Path(eval_setup["ckpt"]).parent / "step-00000099")
    with pytest.raises(job.EvalPreflightError) as e:
        preflight(cfg_for(eval_setup, f"checkpoint={missing}"))
    assert str(e.value) == f"eval.checkpoint: checkpoint {missing} does not exist"
    nowhere = str(eval_setup["root"] / "no-such-run")
    with pytest.raises(job.EvalPreflightError, match=r"checkpoint .*no-such-run does not exist \(expected"):
        preflight(cfg_for(eval_setup, f"checkpoint={nowhere}"))


def test_uncommitted_checkpoint_fails_at_once(eval_setup, tmp_path):
    url = write_checkpoint_for(eval_setup["data"], eval_setup["llm"], str(tmp_path / "ck"), ep_size=1)
    (Path(url) / "COMMITTED").unlink()
    with pytest.raises(job.EvalPreflightError, match="was never committed"):
        preflight(cfg_for(eval_setup, f"checkpoint={url}"))


def test_checkpoint_of_another_model_config_fails_at_once(eval_setup):
    with pytest.raises(job.EvalPreflightError) as e:
        preflight(cfg_for(eval_setup, "expect_model.history_encoder=bag", "expect_model.num_experts=4"))
    assert str(e.value) == (
        f"checkpoint {eval_setup['ckpt']} is from another model config: "
        "model.history_encoder='transformer' (this eval expects 'bag')"
    )


def test_checkpoint_for_another_llm_fails_at_once(eval_setup, tmp_path):
    other = build_tiny_llm(tmp_path / "wide_llm", hidden=96, layers=1)
    with pytest.raises(job.EvalPreflightError) as e:
        preflight(cfg_for(eval_setup, f"llm_path={other}"))
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {eval_setup['ckpt']} does not fit its model config with LLM {other}: ")
    assert "the model wants [4, 128, 96]" in msg or "the model wants" in msg
    assert msg.endswith("(trained from another model config or another LLM?)")


def test_checkpoint_of_another_dataset_fails_at_once(eval_setup, tmp_path):
    other = str(tmp_path / "other")
    prep_small(other)
    m = json.loads((Path(other) / "manifest.json").read_text())
    m["vocab"]["num_items"] += 7
    (Path(other) / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(job.EvalPreflightError) as e:
        preflight(cfg_for(eval_setup, f"data={other}"))
    n = m["vocab"]["num_items"]
    assert str(e.value) == (
        f"checkpoint {eval_setup['ckpt']} was trained for another dataset: its vocab has num_items="
        f"{n - 7}, the manifest {other}/manifest.json gives {n}"
    )


def test_manifest_without_test_split_fails_at_once(eval_setup, tmp_path):
    other = tmp_path / "no_test"
    prep_small(str(other))
    m = json.loads((other / "manifest.json").read_text())
    del m["splits"]["test"]
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(job.EvalPreflightError) as e:
        preflight(cfg_for(eval_setup, f"data={other}"))
    assert str(e.value) == (
        f"eval.data: the manifest {other}/manifest.json has no 'test' split to evaluate (it has "
        "['train', 'valid']); re-run `seller-dist prep` with a time split, or set eval.split"
    )


def test_zero_shot_needs_an_llm_and_builds_the_no_adapter_model(eval_setup):
    with pytest.raises(job.EvalPreflightError, match="zero-shot needs the frozen LLM: set eval.llm_path"):
        preflight(cfg_for(eval_setup, "checkpoint=zero-shot"))
    trained = preflight(cfg_for(eval_setup, "checkpoint=zero-shot", f"llm_path={eval_setup['llm']}"))
    assert trained.model.adapter == "none" and trained.weights == {}


@pytest.mark.parametrize(
    "model_kw, system",
    [
        ({"history_encoder": "bag"}, "bag"),
        ({"prompt": "ids"}, "ids"),
        ({"adapter": "dense"}, "dense"),
        ({"history_encoder": "gru"}, "gru"),
    ],
)
def test_every_baseline_configuration_is_evaluated_the_same_way(eval_setup, tmp_path, model_kw, system):
    url = write_checkpoint_for(
        eval_setup["data"], eval_setup["llm"], str(tmp_path / "ck"), ep_size=1, **model_kw
    )
    cfg = cfg_for(eval_setup, f"checkpoint={url}", *[f"expect_model.{k}={v}" for k, v in model_kw.items()])
    trained = preflight(cfg)
    assert job.describe_system(trained.model) == system
    gen = ExplanationGenerator(trained, eval_setup["data"], system, GenerationOptions(max_new_tokens=4))
    part = gen.run("test", plan_batches(gen.manifest, "test", 4, limit=4))
    assert [g.system for g in part.generations] == [system] * 4
    has_attention = model_kw.get("prompt") != "ids"  # the ids prompt has no fusion attention
    assert all(bool(g.supporting_events) == has_attention for g in part.generations)
    assert bool(part.expert_tokens) == (model_kw.get("adapter", "moe") == "moe")
