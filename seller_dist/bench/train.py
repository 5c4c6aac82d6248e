"""`seller-dist bench train`: training-step throughput, step-time split and MFU of every mode (`plain`,
`deepspeed`, `ray`, `deepspeed[<name>]`, `strategy`; `--gpu`: the loop against its step alone on
one GPU) side by side in ONE run on the same model, data, batch size and seed, because on a shared
machine absolute numbers drift between runs while ratios within one run hold.
Every mode runs the job's own step (seller_dist.train.step.TrainStep) and differs only in the
strategy under it and what feeds and surrounds it; BENCHMARKS.md ("Training") describes each."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seller_dist.bench.artifact import write_artifact
from seller_dist.bench.local_services import rank_env
from seller_dist.config import TrainConfig, from_dict, load_config, to_dict
from seller_dist.strategy_settings import on_gpu
from seller_dist.train.metrics import CHIP_PEAK_TFLOPS, StepTimer, flops_per_step, mfu
from seller_dist.version import provenance

if TYPE_CHECKING:
    from seller_dist.bench.timing import CommClock
    from seller_dist.train.step import TrainStep

MODES = ("plain", "deepspeed", "strategy", "ray")
GPU_LLM = {"llm_hidden": 2048, "llm_layers": 16, "llm_heads": 32, "llm_intermediate": 5632}  # bench.gpu
PARTS = ("data_wait", "forward", "backward", "optimizer", "communication", "other")


@dataclass(frozen=True)
class BenchTrainOptions:
    """What `seller-dist bench train` measures (the CLI's flags, dashes for underscores; `--set` is
    `overrides`, `--variant` one entry of `variant` each)."""

    config: str | None = None  # train YAML (None: the embedded demo config)
    overrides: list[str] = field(default_factory=list)  # KEY=VALUE of the train config
    modes: str = "plain,deepspeed,ray"  # comma-separated, of MODES
    workers: str = "1,2"  # comma-separated worker counts (plain runs 1 only)
    warmup: int = 3  # steps run before measuring
    steps: int = 20  # measured steps
    repeats: int = 1  # rounds over all modes (median reported)
    variant: list[str] = field(default_factory=list)  # NAME:KEY=VALUE[,KEY=VALUE] extra deepspeed runs
    chip: str | None = None  # h100, h200 or cpu: peak for MFU (None: h100 on a GPU, else cpu)
    peak_tflops: float | None = None  # peak per worker device (overrides chip)
    users: int = 300  # synthetic users for the prepared dataset
    llm_hidden: int | None = None  # the frozen LLM's shape (None: llm_shape's default)
    llm_layers: int | None = None
    llm_heads: int | None = None
    llm_intermediate: int | None = None
    gpu: bool = False  # one GPU: the real loop against its step alone, bf16, ~1B frozen LLM
    deepcompile: bool = False  # with gpu: DeepSpeed DeepCompile (zero3)
    stream_batches: int = 200  # batches timed for the stream rate
    work_dir: str = "outputs/bench/train"  # dataset, LLM and run folders
    out: str | None = None  # the JSON artifact (None: outputs/bench/bench-train-<UTC time>.json)


# ----------------------------------------------------------------------------------- preparation
def prepare_inputs(opts: BenchTrainOptions, work: Path) -> tuple[str, str, dict[str, Any]]:
    """(dataset url, llm dir, info): prepared in `work` (reused when already there) unless given."""
    given = dict(o.split("=", 1) for o in opts.overrides if "=" in o)
    info: dict[str, Any] = {}
    data = given.get("data.manifest")
    if data is None:
        data = str(work / f"data-u{opts.users}")
        if not Path(data, "manifest.json").exists():
            from seller_dist.bench.data import prepare_dataset

            t0 = time.perf_counter()
            prepare_dataset(data, opts.users, shard_records=2000)
            info["prep_seconds"] = round(time.perf_counter() - t0, 1)
    llm = given.get("model.llm_path")
    if llm is None:
        shape = llm_shape(opts)
        llm = str(work / ("llm-" + "-".join(f"{k[4]}{v}" for k, v in shape.items() if v)))
        if not Path(llm, "config.json").exists():
            bootstrap_llm(data, llm, **shape)
    return data, llm, info


def llm_shape(opts: BenchTrainOptions) -> dict[str, int]:
    """The frozen LLM's shape: the flags, else the CPU default (128 x 2) or, with --gpu, bench.gpu's."""
    default = (
        GPU_LLM if opts.gpu else {"llm_hidden": 128, "llm_layers": 2, "llm_heads": 0, "llm_intermediate": 0}
    )
    return {k: getattr(opts, k) if getattr(opts, k) is not None else v for k, v in default.items()}


def bootstrap_llm(
    data: str, out: str, llm_hidden: int, llm_layers: int, llm_heads: int = 0, llm_intermediate: int = 0
) -> None:
    """Random-weight Llama on a tokenizer trained from the dataset's text (`bootstrap-llm --steps 0`):
    speed does not depend on what the frozen LLM knows."""
    from seller_dist.model.bootstrap import build_llama, dataset_texts, save_checkpoint, train_tokenizer

    tok = train_tokenizer(list(dataset_texts(data, 20000)), vocab_size=1000)
    heads = llm_heads or max(1, llm_hidden // 32)
    model = build_llama(
        tok, llm_hidden, llm_layers, heads, max_positions=1024, seed=0, intermediate=llm_intermediate
    )
    save_checkpoint(model, tok, out)


def mode_config(base: TrainConfig, workers: int, steps: int, run_dir: str, run_name: str) -> TrainConfig:
    """The same model/data/batch/seed for every mode; only the worker count (and the expert-parallel
    size it allows) changes. No checkpoints, no validation, no wandb: the step is what is measured."""
    cfg = copy.deepcopy(base)
    cfg.max_steps = steps
    cfg.run_name = run_name
    cfg.storage_path = run_dir
    cfg.workers.num_workers = workers
    cfg.workers.max_failures = 0
    if workers % cfg.model.ep_size:
        cfg.model.ep_size = 1
    cfg.checkpoint.every_steps = 0
    cfg.checkpoint.at_end = False
    cfg.eval.every_steps = 0  # validation is not the step
    cfg.logging.wandb = "disabled"
    cfg.validate()
    return cfg


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = text.partition(":")
    if not name or not rest:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
    sets: dict[str, Any] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--variant {text!r}: '{item}' is not KEY=VALUE")
        try:
            sets[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            sets[key.strip()] = value
    return name, sets


# ------------------------------------------------------------------------------------ rank side
def peak_memory_mb() -> float:
    if on_gpu():
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timers() -> tuple[CommClock, StepTimer]:
    import torch

    from seller_dist.bench.timing import CommClock

    sync = torch.cuda.synchronize if on_gpu() else None
    comm = CommClock(sync=sync or (lambda: None)).install()
    return comm, StepTimer(comm_clock=comm, sync=sync)


def rank_record(rank: int, timer: Any, comm: Any, losses: dict[int, float], t_start: float) -> dict[str, Any]:
    return {
        "rank": rank,
        "steps": timer.steps,
        "frozen_params": timer.frozen_params,
        "trainable_params": timer.trainable_params,
        "comm": comm.snapshot(),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "losses": {str(k): v for k, v in losses.items()},
        "worker_seconds": time.perf_counter() - t_start,
    }


def timed_steps(train_step: TrainStep, steps: int, timer: StepTimer) -> dict[int, float]:
    """Steps 0 to `steps` - 1 of `train_step`, each inside the timer's step as `Trainer.fit` times
    them. Returns step -> loss."""
    losses: dict[int, float] = {}
    for step in range(steps):
        timer.step_begin()
        stats = train_step(step)
        timer.step_end(stats.own_tokens, stats.own_samples)
        losses[step + 1] = stats.loss
    return losses


def plain_steps(cfg: TrainConfig, timer: StepTimer) -> dict[int, float]:
    """The job's step over TorchStrategy: the worker's model, data (its stream and prefetch thread)
    and seed in one process with plain PyTorch, no DeepSpeed and no process group. Returns step ->
    loss."""
    import torch

    from seller_dist.data.prefetch import Prefetcher
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.vocab import ModelVocab
    from seller_dist.strategy_settings import StrategySettings
    from seller_dist.train.metrics import parameter_counts
    from seller_dist.train.step import TrainStep, rank_loader, setup_rank_env
    from seller_dist.train.strategy import TorchStrategy

    use_gpu = setup_rank_env()
    strategy = TorchStrategy(StrategySettings.from_train_config(cfg, use_gpu, world_size=1))
    manifest, loader = rank_loader(cfg, 0, 1)
    llm = strategy.load_llm(cfg.model, cfg.storage)
    torch.manual_seed(cfg.seed)
    model = SellerModel(cfg.model, ModelVocab.from_manifest(manifest.data), llm, strategy.registers_llm)
    o = cfg.optim
    state = strategy.prepare(model, o)
    state.train()
    timer.set_model_size(*parameter_counts(model, state.moe))
    batches = Prefetcher(loader, cfg.data.prefetch_batches, pin_memory=use_gpu)
    try:
        step = TrainStep(state, o, cfg.max_steps, cfg.seed, batches, strategy.device, timer=timer)
        return timed_steps(step, cfg.max_steps, timer)
    finally:
        batches.close()


def held_batch_steps(cfg: TrainConfig, timer: StepTimer, distinct_batches: int = 8) -> dict[int, float]:
    """The Trainer's own step (`Trainer.train_step`, DeepSpeed) fed `distinct_batches` batches taken
    from its stream once and reused in turn: the job's step without the stream, collation, the
    prefetch thread, logging, validation or checkpoints. Returns step -> loss."""
    import dataclasses
    import itertools

    from seller_dist.train.trainer import Trainer

    trainer = Trainer(cfg, timer=timer)  # sets the timer's model size
    held = [next(trainer.batches) for _ in range(distinct_batches)]
    trainer.batches.close()
    trainer.state.train()
    step = dataclasses.replace(trainer.train_step, batches=itertools.cycle(held))
    return timed_steps(step, cfg.max_steps, timer)


def _rank_main(
    rank: int, world: int, port: int, mode: str, cfg_dict: dict, out_dir: str, ds_set: dict
) -> None:
    """One spawned rank of the plain or deepspeed mode: writes rank-<r>.json (or rank-<r>.err)."""
    rank_env(rank, world, port)
    import torch.distributed as dist

    code = 0
    t_start = time.perf_counter()
    try:
        comm, timer = _timers()
        cfg = from_dict(TrainConfig, cfg_dict)
        cfg.deepspeed = {**cfg.deepspeed, **ds_set}  # a variant's DeepSpeed settings
        if mode == "plain":
            losses = plain_steps(cfg, timer)
        elif mode == "strategy":
            losses = held_batch_steps(cfg, timer)
        else:
            from seller_dist.train.worker import train_worker

            losses = train_worker(cfg, timer=timer).losses
        rec = rank_record(rank, timer, comm, losses, t_start)
        Path(out_dir, f"rank-{rank}.json").write_text(json.dumps(rec))
    except BaseException as e:
        Path(out_dir, f"rank-{rank}.err").write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        code = 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os._exit(code)


def ray_bench_loop(loop_config: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the benchmark's TorchTrainer: `ray_train_loop` plus the timers."""
    import ray.train

    t_start = time.perf_counter()
    comm, timer = _timers()
    from seller_dist.train.worker import train_worker

    cfg = from_dict(TrainConfig, loop_config["config"])
    cfg.deepspeed = {**cfg.deepspeed, **(loop_config.get("ds_set") or {})}
    result = train_worker(cfg, report=ray.train.report, timer=timer)
    rank = ray.train.get_context().get_world_rank()
    rec = rank_record(rank, timer, comm, result.losses, t_start)
    Path(loop_config["out_dir"], f"rank-{rank}.json").write_text(json.dumps(rec))
    ray.train.report({"step": result.step, "done": True, "checkpoint_url": "", "final": True})


# ---------------------------------------------------------------------------------- driver side
def _read_ranks(out_dir: Path, world: int) -> list[dict[str, Any]]:
    errs = sorted(out_dir.glob("rank-*.err"))
    if errs:
        raise RuntimeError("benchmark rank failed:\n" + errs[0].read_text())
    missing = [r for r in range(world) if not (out_dir / f"rank-{r}.json").exists()]
    if missing:
        raise RuntimeError(f"ranks {missing} wrote no result under {out_dir}")
    return [json.loads((out_dir / f"rank-{r}.json").read_text()) for r in range(world)]


def run_spawned(mode: str, cfg: TrainConfig, world: int, out_dir: Path, ds_set: dict[str, Any]) -> list[dict]:
    import torch.multiprocessing as mp

    from seller_dist.bench.local_services import free_port

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        mp.spawn(
            _rank_main,
            args=(world, free_port(), mode, to_dict(cfg), str(out_dir), ds_set),
            nprocs=world,
            join=True,
        )
    except Exception:
        if not list(out_dir.glob("rank-*.err")):
            raise
    return _read_ranks(out_dir, world)


def run_ray(cfg: TrainConfig, out_dir: Path, ds_set: dict[str, Any]) -> list[dict]:
    """The driver's own pieces (paths, preflight, local Ray, Scaling/RunConfig), our loop function."""
    from ray.train.torch import TorchTrainer

    from seller_dist.train.driver import absolutize_local_paths, build_trainer, init_ray
    from seller_dist.train.preflight import preflight

    out_dir.mkdir(parents=True, exist_ok=True)
    absolutize_local_paths(cfg)
    preflight(cfg)
    init_ray(cfg)
    job = build_trainer(cfg)
    trainer = TorchTrainer(
        ray_bench_loop,
        train_loop_config={"config": to_dict(cfg), "out_dir": str(out_dir.resolve()), "ds_set": ds_set},
        scaling_config=job.scaling_config,
        run_config=job.run_config,
    )
    trainer.fit()
    return _read_ranks(out_dir, cfg.workers.num_workers)


def summarize(ranks: list[dict[str, Any]], warmup: int, steps: int, peak_tflops: float) -> dict[str, Any]:
    """Job-level rates over the measured steps (all ranks step together: the job's time is the
    slowest rank's), per-step split averaged over ranks, MFU = achieved FLOP/s / (peak x workers)."""
    world = len(ranks)
    measured = [r["steps"][warmup : warmup + steps] for r in ranks]
    n = len(measured[0])
    if n == 0:
        raise RuntimeError("no measured steps: --steps must be >= 1")
    job_s = max(sum(s["step"] for s in steps) for steps in measured)
    samples = int(sum(s["samples"] for steps in measured for s in steps))
    tokens = int(sum(s["llm_tokens"] for steps in measured for s in steps))
    frozen, trainable = ranks[0]["frozen_params"], ranks[0]["trainable_params"]
    flops = flops_per_step(frozen, trainable, tokens, samples)
    split = {p: sum(s[p] for steps in measured for s in steps) / (n * world) for p in PARTS}
    step_time = sum(s["step"] for steps in measured for s in steps) / (n * world)
    comm: dict[str, dict[str, float]] = {}
    for r in ranks:  # whole run incl. warm-up and setup: per-kind totals averaged over ranks
        for kind, v in r["comm"].items():
            c = comm.setdefault(kind, {"seconds": 0.0, "calls": 0, "bytes": 0})
            for k in c:
                c[k] += v[k] / world
    return {
        "workers": world,
        "measured_steps": n,
        "samples": samples,
        "llm_tokens": tokens,
        "seconds": job_s,
        "samples_per_s": samples / job_s,
        "tokens_per_s": tokens / job_s,
        "tokens_per_s_per_worker": tokens / job_s / world,
        "cost_per_sample_worker_s": job_s * world / samples,
        "step_time_s": step_time,
        "split_s": split,
        "split_fraction": {p: v / step_time for p, v in split.items()},
        "frozen_params": frozen,
        "trainable_params": trainable,
        "tflops_per_worker": flops / job_s / world / 1e12,
        "mfu": mfu(flops, job_s, peak_tflops, world),
        "peak_memory_mb_per_rank": [r["peak_memory_mb"] for r in ranks],
        "comm_total_by_kind": comm,
        "first_losses": [
            ranks[0]["losses"].get(str(i)) for i in range(1, min(4, len(ranks[0]["losses"])) + 1)
        ],
        "rank_process_seconds": max(r["worker_seconds"] for r in ranks),
    }


def measure_cpu_peak_tflops(seconds: float = 1.0, n: int = 512) -> float:
    """Single-thread fp32 matmul rate: the CPU 'peak' a worker (one intra-op thread) can reach."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            count += 1
        return 2.0 * n**3 * count / (time.perf_counter() - t0) / 1e12
    finally:
        torch.set_num_threads(threads)


def measure_stream(cfg: TrainConfig, batches: int) -> dict[str, Any]:
    """Records/s of one rank's stream with collation (what the training loop pulls), in-process,
    with the config's loader workers, from a cold start (the first shard read is included)."""
    from seller_dist.train.step import rank_loader

    _, loader = rank_loader(cfg, 0, 1)
    t0, records, n = time.perf_counter(), 0, 0
    for batch in loader.epoch_iter():  # from a cold start: shard fetch, checks, decode, collate
        records += int((~batch["pad"]).sum())
        n += 1
        if n >= batches:
            break
    secs = time.perf_counter() - t0
    return {
        "records": records,
        "batches": n,
        "seconds": round(secs, 4),
        "records_per_s": records / secs,
        "loader_workers": cfg.data.num_workers,
    }


def plan(opts: BenchTrainOptions) -> list[tuple[str, int, dict[str, Any]]]:
    """(mode label, workers, ds overrides) in run order."""
    modes = [m.strip() for m in opts.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}, expected some of {list(MODES)}")
    workers = [int(w) for w in str(opts.workers).split(",") if w.strip()]
    variants = [parse_variant(v) for v in opts.variant]
    out: list[tuple[str, int, dict[str, Any]]] = []
    for w in workers:
        if "plain" in modes and w == 1:
            out.append(("plain", 1, {}))
        if "deepspeed" in modes:
            out.append(("deepspeed", w, {}))
            out.extend((f"deepspeed[{name}]", w, sets) for name, sets in variants)
        if "strategy" in modes:
            out.append(("strategy", w, {}))
        if "ray" in modes:
            out.append(("ray", w, {}))
    return out


def run_benchmark(opts: BenchTrainOptions) -> dict[str, Any]:
    import torch

    from seller_dist.train.driver import default_config_path

    gpu_sets: list[str] = []
    if opts.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("bench train --gpu: no CUDA device is visible (run it on a GPU machine)")
        opts = replace(opts, modes="deepspeed,strategy", workers="1")
        # micro-batch 32: the strategy-only figure's (seller_dist.bench.gpu at 0.95B); --set wins
        gpu_sets = ["workers.use_gpu=true", "precision=bf16", "workers.num_workers=1", "model.ep_size=1"]
        gpu_sets.append("data.batch_size=32")
    if opts.deepcompile:
        gpu_sets.append("deepcompile=true")
    work = Path(opts.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, llm, prep_info = prepare_inputs(opts, work)
    base = load_config(
        TrainConfig,
        opts.config or default_config_path(),
        [f"data.manifest={data}", f"model.llm_path={llm}", *gpu_sets, *opts.overrides],
    )

    on_gpu = torch.cuda.is_available()
    chip = opts.chip or ("h100" if on_gpu else "cpu")
    if opts.peak_tflops:
        peak, peak_source = opts.peak_tflops, "--peak-tflops"
    elif chip == "cpu":
        peak, peak_source = measure_cpu_peak_tflops(), "measured single-thread fp32 512x512 matmul"
    else:
        peak, peak_source = CHIP_PEAK_TFLOPS[chip], f"{chip} dense bf16"
    # + 1 cool-down step, not measured: the last step also does end-of-job work (the final log
    # line and, under Ray, the final report's flush), a per-job cost kept in job_wall_s
    steps = opts.warmup + opts.steps + 1
    runs_root = work / "runs"
    result: dict[str, Any] = {
        "benchmark": "train",
        "provenance": provenance(),
        "settings": {
            "warmup_steps": opts.warmup,
            "measured_steps": opts.steps,
            "repeats": opts.repeats,
            "chip": chip,
            "peak_tflops_per_worker": peak,
            "peak_source": peak_source,
            "data": data,
            "llm": llm,
            **prep_info,
        },
        "config": to_dict(base),
        "results": [],
    }
    runs = plan(opts)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        if any(label == "ray" for label, _, _ in runs):
            # Start the local Ray first: its system processes (GCS, raylet, agents) finish starting
            # while the other modes run instead of competing with the first measured Ray job.
            from seller_dist.train.driver import init_ray

            t0 = time.perf_counter()
            init_ray(mode_config(base, max(w for _, w, _ in runs), steps, str(runs_root), "ray-start"))
            result["settings"]["ray_start_seconds"] = round(time.perf_counter() - t0, 2)
        for rep in range(opts.repeats):
            for label, w, ds_set in runs:
                name = f"bench-{label.replace('[', '-').replace(']', '')}-w{w}-r{rep}-{stamp}"
                cfg = mode_config(base, w, steps, str(runs_root), name)
                out_dir = work / "ranks" / name
                t0 = time.perf_counter()
                if label == "ray":
                    ranks = run_ray(cfg, out_dir, ds_set)
                else:
                    kind = label if label in ("plain", "strategy") else "deepspeed"
                    ranks = run_spawned(kind, cfg, w, out_dir, ds_set)
                s = summarize(ranks, opts.warmup, opts.steps, peak)
                s.update(
                    mode=label,
                    ds_overrides=ds_set,
                    ep_size=cfg.model.ep_size,
                    repeat=rep,
                    job_wall_s=round(time.perf_counter() - t0, 2),
                )
                raw.setdefault((label, w), []).append(s)
                print(
                    f"  {label:22s} workers={w} {s['samples_per_s']:8.1f} samples/s  step "
                    f"{s['step_time_s'] * 1e3:7.1f} ms  (wall {s['job_wall_s']:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
    for reps in raw.values():
        entry = sorted(reps, key=lambda s: s["samples_per_s"])[len(reps) // 2]  # the median repeat
        if len(reps) > 1:
            entry["samples_per_s_repeats"] = [r["samples_per_s"] for r in reps]
        result["results"].append(entry)
    result["ratios"] = ratios(result["results"])
    stream = measure_stream(mode_config(base, 1, steps, str(runs_root), "stream"), opts.stream_batches)
    result["stream"] = stream_vs_training(stream, result["results"])
    return result


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-sample cost ratios: ray / deepspeed at the same worker count, deepspeed(1) / plain, and
    each deepspeed variant / deepspeed at the same worker count (< 1 = faster)."""
    by = {(r["mode"], r["workers"]): r for r in results}
    out: dict[str, Any] = {}
    for (mode, w), r in by.items():
        ds = by.get(("deepspeed", w))
        if ds is None:
            continue
        if mode == "ray":
            out[f"ray_over_deepspeed_w{w}"] = r["cost_per_sample_worker_s"] / ds["cost_per_sample_worker_s"]
        elif mode == "strategy":  # the real loop's throughput as a fraction of its step's alone
            out[f"loop_over_strategy_throughput_w{w}"] = ds["samples_per_s"] / r["samples_per_s"]
        elif mode.startswith("deepspeed["):
            out[f"{mode}_over_deepspeed_w{w}"] = (
                r["cost_per_sample_worker_s"] / ds["cost_per_sample_worker_s"]
            )
    plain = by.get(("plain", 1))
    for (mode, w), r in by.items():
        if plain is not None and mode == "deepspeed":
            out[f"deepspeed_w{w}_over_plain"] = (
                r["cost_per_sample_worker_s"] / plain["cost_per_sample_worker_s"]
            )
    return out


def stream_vs_training(stream: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream's records/s for one rank against the fastest per-worker consumption measured."""
    per_worker = [r["samples_per_s"] / r["workers"] for r in results]
    fastest = max(per_worker) if per_worker else float("nan")
    return {
        **stream,
        "training_consumes_per_worker": fastest,
        "stream_over_training": stream["records_per_s"] / fastest,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| mode | workers | samples/s | tokens/s/worker | step ms | data wait | forward | backward "
        "| optimizer | comm | other | peak MB/rank | MFU | x deepspeed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["mode"], r["workers"]): r for r in result["results"]}
    for r in result["results"]:
        sp = r["split_s"]
        ds = by.get(("deepspeed", r["workers"]))
        rel = f"{r['cost_per_sample_worker_s'] / ds['cost_per_sample_worker_s']:.3f}" if ds else "-"
        lines.append(
            f"| {r['mode']} | {r['workers']} | {r['samples_per_s']:.1f} | {r['tokens_per_s_per_worker']:.0f} | "
            f"{r['step_time_s'] * 1e3:.1f} | "
            + " | ".join(f"{sp[p] * 1e3:.1f}" for p in PARTS)
            + f" | {'/'.join(f'{m:.0f}' for m in r['peak_memory_mb_per_rank'])} | {r['mfu']:.2%} | {rel} |"
        )
    return "\n".join(lines)


def run(opts: BenchTrainOptions) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # DeepSpeed's JIT-built CPU comm op is cached here (rank processes and Ray workers inherit it)
    os.environ.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[2] / ".cache" / "torch_extensions")
    )
    result = run_benchmark(opts)
    write_artifact(result, opts.out, "bench-train")
    print(json.dumps(result, indent=2, default=str))
    print(table(result))
    print("ratios: " + ", ".join(f"{k}={v:.3f}" for k, v in result["ratios"].items()))
    s = result["stream"]
    print(
        f"stream: {s['records_per_s']:.0f} records/s per rank vs training {s['training_consumes_per_worker']:.1f}"
        f" per worker ({s['stream_over_training']:.1f}x)"
    )
    return 0
