"""SELLER against the order- and time-free `bag` baseline on the synthetic source, over seeds.

Not collected by pytest (a research run, 5-14 min per seed on 2 cores). Every part is deterministic
for a seed: the packaged synthetic prep, `bootstrap-llm --seed S` (copy practice, 800 steps; the
tokenizer no longer depends on hash order), one DeepSpeed ZeRO-3 gloo rank per system trained with
`seed=S` (the two in parallel), greedy generation for the whole test split, then the eval job's
scoring. Results are appended to ROOT/summaries.jsonl and, with `--artifact`, written with the run's
provenance to the JSON docs/evaluation.md's table is generated from (`./launch.sh tables`).

    .venv/bin/python -m tests.learning_seller_vs_bag ROOT --seeds 0,1,2,3 [--steps 1500]
        [--bootstrap-steps 800] [--set model.KEY=VALUE ...]

`--steps 600 --bootstrap-steps 600 --seeds 0` is what tests/integration/test_learning_seller_vs_bag.py
runs in CI (about 4 minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ENCODERS = {"seller": "transformer", "bag": "bag"}


def run_seed(root: Path, seed: int, steps: int, boot_steps: int, extra: list[str] = ()) -> dict:
    from seller_dist.config import EvalConfig, GenerationOptions, PrepConfig, load_config
    from seller_dist.data.split_batches import plan_batches
    from seller_dist.eval.generate import ExplanationGenerator
    from seller_dist.eval.generations import write_generations
    from seller_dist.eval.scoring import score_generations
    from seller_dist.train.export import load_trained
    from tests.eval_helpers import shared_encoder
    from tests.train_helpers import PREP_SYNTHETIC, spawn_workers

    data, llm = root / "data", root / f"llm-seed{seed}-{boot_steps}"
    if not (data / "manifest.json").exists():
        from data_prep.pipeline import run_prep

        run_prep(load_config(PrepConfig, PREP_SYNTHETIC, [f"output={data}", "overwrite=true"]))
    if not (llm / "config.json").exists():
        from seller_dist.model.bootstrap import BootstrapConfig, bootstrap_llm

        boot = BootstrapConfig(str(data), str(llm), vocab_size=1000, hidden=128, steps=boot_steps, seed=seed)
        bootstrap_llm(dataclasses.replace(boot, max_len=256, copy_fraction=1.0))
    tag = f"seed{seed}-steps{steps}"

    def train(encoder: str) -> str:
        runs = root / f"runs-{tag}-{encoder}"
        overrides = [
            f"data.manifest={data}",
            f"model.llm_path={llm}",
            f"model.history_encoder={encoder}",
            f"model.history_text={'sorted' if encoder == 'bag' else 'time'}",  # bag: no order in the text
            "model.ep_size=1",
            f"storage_path={runs}",
            "run_name=learn",
            f"max_steps={steps}",
            "optim.lr=0.003",
            "checkpoint.every_steps=0",
            "logging.wandb=disabled",
            "logging.every_steps=500",
            f"seed={seed}",
            *extra,
        ]
        result = spawn_workers(overrides, root / f"w-{tag}-{encoder}", world=1)
        assert isinstance(result[0], dict), result[0]
        return str(runs / "learn" / "checkpoints")

    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # each call spawns its own rank process: one core each
        runs = dict(zip(ENCODERS.values(), pool.map(train, ENCODERS.values()), strict=True))
    summary: dict = {"seed": seed, "steps": steps, "train_s": round(time.monotonic() - t0)}
    t0 = time.monotonic()
    # models load one after the other (transformers' loading is not thread-safe); then each system
    # generates and is scored on a thread of its own (torch ops release the GIL: a core each)
    gens = {
        name: ExplanationGenerator(
            load_trained(runs[encoder]),
            str(data),
            encoder,
            GenerationOptions(batch_size=16, max_new_tokens=40),
        )
        for name, encoder in ENCODERS.items()
    }
    scorers = {name: shared_encoder() for name in ENCODERS}

    def evaluate(name: str) -> tuple[dict, dict]:
        """Generate the whole test split with the eval job's generator and score it (one system)."""
        gen = gens[name]
        part = gen.run("test", plan_batches(gen.manifest, "test", 16))
        url = str(root / f"generations-{tag}-{name}.jsonl")
        write_generations(url, part.generations)
        cfg = load_config(EvalConfig, None, ["text.bertscore=false", "simulator.learned=false"])
        r = score_generations(url, str(data), cfg, encoder=scorers[name])
        g, ret = r["grounding"], r["retrieval"]["generated"]
        exact = r["simulator"]["exact"]["acceptance"]
        return r, {
            "cites_history": g["generated"]["cites_history"]["mean"],
            "cites_reference_event": g["generated"]["cites_reference_event"]["mean"],
            "attention_top_is_cited": g.get("attention_top_is_cited", {}).get("mean"),
            "mrr": ret["mrr"]["mean"],
            "hr@10": ret["hr@10"]["mean"],
            "exact_acceptance": exact["generated"]["mean"],  # the generator's own user, docs/evaluation.md
        }

    with ThreadPoolExecutor(2) as pool:
        evaluated = dict(zip(ENCODERS, pool.map(evaluate, ENCODERS), strict=True))
    summary["eval_s"] = round(time.monotonic() - t0)
    for name, (r, numbers) in evaluated.items():
        summary[name] = numbers
        summary["reference_mrr"] = r["retrieval"]["reference"]["mrr"]["mean"]  # the same for both
        summary["reference_exact_acceptance"] = r["simulator"]["exact"]["acceptance"]["reference"]["mean"]
    with open(root / "summaries.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--bootstrap-steps", type=int, default=800)
    p.add_argument("--set", action="append", default=[], help="train config override for both systems")
    p.add_argument("--artifact", default=None, help="also write every seed's summary and the provenance here")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    summaries = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        summaries.append(run_seed(root, seed, args.steps, args.bootstrap_steps, args.set))
        print(json.dumps(summaries[-1]), flush=True)
    if args.artifact:
        from seller_dist.version import provenance

        art = {"kind": "learning", "provenance": provenance(), "steps": args.steps}
        art |= {"bootstrap_steps": args.bootstrap_steps, "overrides": args.set, "runs": summaries}
        Path(args.artifact).write_text(json.dumps(art, indent=2) + "\n")


if __name__ == "__main__":
    main()
