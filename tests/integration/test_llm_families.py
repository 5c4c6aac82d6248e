"""Bring your own LLM: every family x tokenizer family of tests/families_zoo.py through the
real training job and back.

For each (architecture, tokenizer) pair of FAMILY_MATRIX, built from a small config with random
weights and saved as sharded safetensors with an index:
- `train_worker` on 2 gloo ranks, ZeRO-3: 20 steps, every loss finite, the last steps' mean below
  the first steps'; the replicated layout's first steps give the same losses (same init, same data);
- the final checkpoint exported, reloaded in a process where `ray` and `deepspeed` cannot be
  imported: the same loss on a fixed batch and the same greedy tokens as the checkpoint read back
  in this process; the eval job's generator runs there and writes text.
The real SmolLM2-135M-Instruct (imported from its packaged GGUF, tests/real_llm_helpers.py) is one
more case, on its own 4-example dataset: 4 ZeRO-3 steps (the same 4 examples each step, so the
mean loss falls), 2 replicated steps, the same export and reload (about 4 s a step on 2 CPU ranks).
All cases train inside one spawn of the two ranks (one DeepSpeed start-up), to fit CI's budget.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from tests.families_zoo import FAMILY_MATRIX, build_family_llm
from tests.real_llm_helpers import REAL_LLM_NAME, prep_tiny, real_llm_missing
from tests.train_helpers import REPO, prep_small, rank_env, small_overrides, train_config

pytestmark = pytest.mark.slow

STEPS = 20
REPLICATED_STEPS = 3
REAL = ("llama", REAL_LLM_NAME)  # the real LLM as an (architecture, tokenizer) case
CASES = [*FAMILY_MATRIX, REAL]
# steps (ZeRO-3, replicated) per case: the real LLM's step costs ~100x a random zoo model's
STEP_COUNTS = {REAL: (4, 2)}
# the real LLM: its own tiny dataset (prep_tiny), 2 examples per rank per step, no validation
REAL_OVERRIDES = ["data.batch_size=2", "eval.every_steps=0"]


def pair_name(arch: str, conv: str) -> str:
    return f"{arch}-{conv}"


def steps_of(case: tuple[str, str]) -> tuple[int, int]:
    return STEP_COUNTS.get(case, (STEPS, REPLICATED_STEPS))


def overrides(data: str, llm: str, runs: str, name: str, layout: str, steps: int) -> list[str]:
    return small_overrides(data, llm, runs) + [
        f"run_name={name}-{layout}",
        f"llm_layout={layout}",
        f"max_steps={steps}",
        "optim.lr=0.02",
        "optim.warmup_steps=2",
        "model.dropout=0.0",
        f"checkpoint.every_steps={steps}",
        "checkpoint.keep=1",
        "logging.every_steps=10",
    ]


def _rank_main(rank: int, world: int, port: int, jobs: list[tuple[str, list[str]]], out_dir: str) -> None:
    rank_env(rank, world, port)
    import torch.distributed as dist

    from seller_dist.train.worker import train_worker

    results, code = {}, 0
    for key, job in jobs:
        t0 = time.monotonic()
        try:
            r = train_worker(train_config(job))
            losses = [r.losses[step] for step in sorted(r.losses)]  # step -> mean loss over ranks
            seconds = round(time.monotonic() - t0, 1)  # the job's wall time: what each case costs CI
            results[key] = {"losses": losses, "checkpoint_url": r.checkpoint_url, "seconds": seconds}
        except BaseException as e:  # the test names the pair that failed
            results[key] = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"}
            code = 1
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    if dist.is_initialized():
        dist.destroy_process_group()
    os._exit(code)


RELOAD = r"""
import json, sys

sys.modules["ray"] = None  # importing either now raises ImportError; find_spec says "not installed"
sys.modules["deepspeed"] = None
from tests.integration.test_llm_families import behaviour
out = {}
for key, export_dir, data in json.loads(sys.argv[1]):
    out[key] = behaviour(export_dir, data, exported=True)
assert sys.modules["deepspeed"] is None and sys.modules["ray"] is None
print("RESULT " + json.dumps(out))
"""


def behaviour(url: str, data: str, exported: bool) -> dict:
    """Loss on the first 4 test examples, greedy tokens and the eval generator's texts for them."""
    from seller_dist.config import GenerationOptions
    from seller_dist.data.collate import SellerCollator
    from seller_dist.data.split_batches import plan_batches, read_batches
    from seller_dist.eval.generate import ExplanationGenerator
    from seller_dist.model.llm import GenerationConfig
    from seller_dist.train.export import from_checkpoint, from_export

    trained = from_export(url) if exported else from_checkpoint(url)
    gen = ExplanationGenerator(trained, data, "seller", GenerationOptions(batch_size=4, max_new_tokens=6))
    plan = plan_batches(gen.manifest, "test", 4, limit=4)
    _, records = next(iter(read_batches(gen.manifest, "test", plan, None)))
    m = trained.model
    train = SellerCollator(
        gen.collate.tokenizer, gen.collate.catalog, gen.max_history, num_soft_tokens=m.num_soft_tokens
    )
    batch = {k: v for k, v in train(records).items() if isinstance(v, torch.Tensor) and k != "pad"}
    with torch.no_grad():
        loss = float(gen.seller.model(batch, moe=gen.seller.moe)["loss"])
        inputs = {k: v for k, v in gen.collate(records).items() if isinstance(v, torch.Tensor) and k != "pad"}
        tokens = gen.seller.generate(inputs, gen=GenerationConfig(max_new_tokens=6))["tokens"].tolist()
    texts = [g.generated for g in gen.generate_batch(0, records)[0]]
    return {"loss": loss, "tokens": tokens, "texts": texts}


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory, request):
    from tests.conftest import free_port

    work = tmp_path_factory.mktemp("families")
    data = str(work / "data")
    prep_small(data)
    runs = str(work / "runs")
    jobs, llms, datas = [], {}, {}
    for case in CASES:
        name = pair_name(*case)
        if case == REAL:
            if real_llm_missing():
                continue  # its tests skip and say why
            llms[name] = request.getfixturevalue("real_llm_dir")
            datas[name] = str(work / "data-real")
            prep_tiny(datas[name])
            extra = REAL_OVERRIDES
        else:
            llms[name] = build_family_llm(work / "llm" / name, *case, seed=0, init_std=0.2)
            datas[name], extra = data, []
        for layout, steps in zip(("zero3", "replicated"), steps_of(case), strict=True):
            jobs.append(
                ((name, layout), overrides(datas[name], llms[name], runs, name, layout, steps) + extra)
            )
    out = work / "out"
    out.mkdir()
    from tests.ranks import spawn_ranks

    keyed = [(f"{n}|{layout}", job) for (n, layout), job in jobs]
    with contextlib.suppress(Exception):  # a failed pair's error is in the rank files
        spawn_ranks(_rank_main, (2, free_port(), keyed, str(out)), 2)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return {"data": datas, "llms": llms, "ranks": ranks, "work": work}


@pytest.mark.parametrize("arch,conv", CASES, ids=[pair_name(*p) for p in CASES])
def test_family_trains_under_zero3_and_replicated(family_runs, arch, conv):
    name = pair_name(arch, conv)
    if name not in family_runs["llms"]:
        pytest.skip(real_llm_missing() or name)
    for layout in ("zero3", "replicated"):
        for rank in family_runs["ranks"]:
            assert "error" not in rank[f"{name}|{layout}"], rank[f"{name}|{layout}"]["error"]
    steps, replicated_steps = steps_of((arch, conv))
    losses = family_runs["ranks"][0][f"{name}|zero3"]["losses"]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    half = min(5, steps // 2)
    first, last = sum(losses[:half]) / half, sum(losses[-half:]) / half
    assert last < first, losses
    replicated = family_runs["ranks"][0][f"{name}|replicated"]["losses"]
    assert replicated == pytest.approx(losses[:replicated_steps], rel=1e-4, abs=1e-5)


def test_exports_reload_without_ray_or_deepspeed(family_runs):
    """One process for every pair: the export's loss and greedy tokens equal the checkpoint's."""
    from seller_dist.train.export import export

    pairs, want = [], {}
    for name, data in family_runs["data"].items():
        result = family_runs["ranks"][0].get(f"{name}|zero3", {})
        if "checkpoint_url" not in result:
            continue  # reported by the training test
        export_dir = export(result["checkpoint_url"], family_runs["work"] / "export" / name)
        pairs.append((name, str(export_dir), data))
        want[name] = behaviour(result["checkpoint_url"], data, exported=False)
    assert len(pairs) == len(family_runs["llms"]) >= len(FAMILY_MATRIX)
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps(pairs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for name, w in want.items():
        assert got[name]["loss"] == pytest.approx(w["loss"], rel=1e-6), name
        assert got[name]["tokens"] == w["tokens"], name
        assert got[name]["texts"] == w["texts"] and len(got[name]["texts"]) == 4, name
