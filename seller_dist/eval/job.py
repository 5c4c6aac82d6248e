"""`seller-dist eval`: Ray workers generate explanations for the test split, the driver scores them.
The driver checks the split, the checkpoint and its fit to the model and the dataset before Ray is contacted,
so a wrong run fails in seconds, not after the workers have loaded an LLM; the workers then take every W-th
planned batch (seller_dist.eval.generate), and the driver gathers them by key, writes generations.jsonl,
scores it (seller_dist.eval.scoring) and writes the report (docs/evaluation.md, "The eval job").
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import typing
from typing import Any

from seller_dist import storage
from seller_dist.config import ConfigError, EvalConfig, ModelConfig, coerce
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import plan_batches
from seller_dist.eval.generate import ExplanationGenerator, GeneratedPart, describe_system
from seller_dist.logs import stage_log
from seller_dist.train.checkpoint import CheckpointError
from seller_dist.train.export import TrainedWeights, load_trained

log = logging.getLogger(__name__)
stage = stage_log(__name__)  # the job's stage lines (seller_dist/logs.py)

ZERO_SHOT = "zero-shot"
GENERATIONS_FILE = "generations.jsonl"


class EvalPreflightError(ConfigError):
    """The eval cannot start: the message says which input is wrong and how."""


# ------------------------------------------------------------------------------------- preflight
def load_manifest(cfg: EvalConfig) -> Manifest:
    try:
        manifest = Manifest.load(cfg.data, cfg.storage)
    except FileNotFoundError:
        raise EvalPreflightError(
            f"eval.data: no manifest.json under {cfg.data} (prepare the dataset with `seller-dist prep`)"
        ) from None
    splits = manifest.data.get("splits", {})
    if splits.get(cfg.split, {}).get("count", 0) <= 0:
        have = sorted(k for k, v in splits.items() if v.get("count"))
        raise EvalPreflightError(
            f"eval.data: the manifest {manifest.root}/manifest.json has no '{cfg.split}' split to evaluate "
            f"(it has {have}); re-run `seller-dist prep` with a time split, or set eval.split"
        )
    return manifest


def expected_model_mismatches(model: ModelConfig, expect: dict[str, Any]) -> list[str]:
    hints = typing.get_type_hints(ModelConfig)
    out = []
    for key, want in sorted(expect.items()):
        want = coerce(want, hints[key], f"eval.expect_model.{key}")
        have = getattr(model, key)
        if key == "ep_size":  # a layout of the experts, not a property of the model
            continue
        if have != want:
            out.append(f"model.{key}={have!r} (this eval expects {want!r})")
    return out


def check_fits(trained: TrainedWeights, llm_path: str, storage_cfg: Any) -> None:
    """Every trained tensor has the name and shape the model config + LLM want (only the LLM's
    config.json is read: seller_dist.train.weights_fit)."""
    from transformers import AutoConfig

    from seller_dist.model.llm import resolve_llm_path
    from seller_dist.model.vocab import ModelVocab
    from seller_dist.train.weights_fit import expected_shapes, misfit

    m = trained.model
    llm_config = AutoConfig.from_pretrained(resolve_llm_path(llm_path, m.llm_cache_dir, storage_cfg))
    want, _ = expected_shapes(m, ModelVocab(**trained.vocab), int(llm_config.hidden_size))
    found = misfit(want, trained.weights)
    if found:
        missing, unexpected, wrong = sorted(found.missing), found.unexpected, sorted(found.wrong)
        have = {k: list(trained.weights[k].shape) for k in wrong[:3]}
        details = [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
        ]
        details += [f"{k} is {have[k]} in the checkpoint, the model wants {list(want[k])}" for k in wrong[:3]]
        raise EvalPreflightError(
            f"checkpoint {trained.source} does not fit its model config with LLM {llm_path}: "
            + "; ".join(d for d in details if d)
            + " (trained from another model config or another LLM?)"
        )


def resolve_model(cfg: EvalConfig, manifest: Manifest) -> TrainedWeights:
    """The weights to evaluate, checked against the dataset and `expect_model`."""
    from seller_dist.model.vocab import ModelVocab

    vocab = ModelVocab.from_manifest(manifest.data)
    if cfg.checkpoint == ZERO_SHOT:
        fields = {**cfg.expect_model, "adapter": "none"}
        if cfg.llm_path:
            fields["llm_path"] = cfg.llm_path
        model = ModelConfig(**{k: v for k, v in fields.items() if k != "ep_size"})
        if not model.llm_path:
            raise EvalPreflightError("eval.checkpoint=zero-shot needs the frozen LLM: set eval.llm_path")
        return TrainedWeights(ZERO_SHOT, None, model, dataclasses.asdict(vocab), {})
    if not cfg.checkpoint:
        raise EvalPreflightError(
            "eval.checkpoint: give a committed checkpoint, a run's checkpoints folder, an export folder, "
            f"or '{ZERO_SHOT}' for the frozen LLM without an adapter"
        )
    try:
        trained = load_trained(cfg.checkpoint, cfg.storage)
    except (CheckpointError, FileNotFoundError) as e:
        raise EvalPreflightError(f"eval.checkpoint: {e}") from None
    if cfg.llm_path:
        trained.model = dataclasses.replace(trained.model, llm_path=cfg.llm_path)
    mismatches = expected_model_mismatches(trained.model, cfg.expect_model)
    if mismatches:
        raise EvalPreflightError(
            f"checkpoint {trained.source} is from another model config: " + "; ".join(mismatches)
        )
    ours = dataclasses.asdict(vocab)
    differ = [k for k in ours if trained.vocab.get(k) != ours[k]]
    if differ:
        k = differ[0]
        raise EvalPreflightError(
            f"checkpoint {trained.source} was trained for another dataset: its vocab has {k}="
            f"{trained.vocab.get(k)!r}, the manifest {manifest.root}/manifest.json gives {ours[k]!r}"
        )
    check_fits(trained, trained.model.llm_path, cfg.storage)
    return trained


def check_reference_group(cfg: EvalConfig, manifest: Manifest) -> None:
    """eval.references=real|template: the split (its first `limit` examples) has that group."""
    if cfg.references == "all":
        return
    from seller_dist.eval.references import EmptyReferenceGroup, check_not_empty
    from seller_dist.eval.scoring import load_split

    records = load_split(manifest, cfg.split, cfg, cfg.limit or None)
    where = f"split '{cfg.split}' of {manifest.root}" + (f" (first {cfg.limit})" if cfg.limit else "")
    try:
        check_not_empty(cfg.references, records, where)
    except EmptyReferenceGroup as e:
        raise EvalPreflightError(str(e)) from None


# -------------------------------------------------------------------------------------- workers
class EvalWorker:
    """The Ray actor body: one ExplanationGenerator per worker, loaded once."""

    def __init__(self, trained: TrainedWeights, cfg_dict: dict[str, Any], system: str, use_gpu: bool):
        import torch

        from seller_dist.config import from_dict

        cfg = from_dict(EvalConfig, cfg_dict)
        torch.set_num_threads(max(1, int(cfg.workers.cpus_per_worker)))  # the CPUs Ray reserved for it
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.generator = ExplanationGenerator(
            trained, cfg.data, system, cfg.generation, cfg.llm_path, cfg.storage, device
        )
        self.references = cfg.references

    def run(self, split: str, batches: list) -> GeneratedPart:
        return self.generator.run(split, batches, self.references)


def generate_with_ray(
    cfg: EvalConfig, trained: TrainedWeights, system: str, manifest: Manifest
) -> tuple[list, list[float], dict[str, Any]]:
    """(generations sorted by key, expert load fractions, throughput stats) from W Ray actors."""
    import ray

    from seller_dist.ray_cluster import init_ray
    from seller_dist.train.driver import worker_env

    w = cfg.workers
    plan = plan_batches(manifest, cfg.split, cfg.generation.batch_size, cfg.limit)
    init_ray(w.ray_address, int(w.num_workers * w.cpus_per_worker + 0.999))
    actor_cls = ray.remote(EvalWorker).options(
        num_cpus=w.cpus_per_worker,
        num_gpus=w.gpus_per_worker if w.use_gpu else 0,
        runtime_env={"env_vars": worker_env()},
    )
    from seller_dist.config import to_dict

    t0 = time.perf_counter()
    ref = ray.put(trained)
    actors = [actor_cls.remote(ref, to_dict(cfg), system, w.use_gpu) for _ in range(w.num_workers)]
    try:
        parts: list[GeneratedPart] = ray.get(
            [a.run.remote(cfg.split, plan[i :: w.num_workers]) for i, a in enumerate(actors)]
        )
    finally:
        for a in actors:
            ray.kill(a)
    return gather_parts(parts, len(plan), time.perf_counter() - t0)


def gather_parts(
    parts: list[GeneratedPart], batches: int, wall: float
) -> tuple[list, list[float], dict[str, Any]]:
    """The workers' parts as (generations sorted by key, expert load fractions, the report's
    `generation` stats). `compile_fallback` is None unless a worker's compiled decode step failed to
    compile and it decoded eagerly: then the reason (one line; distinct reasons joined by "; ")."""
    gens = sorted((g for p in parts for g in p.generations), key=lambda g: g.key)
    load = [0.0] * max((len(p.expert_tokens) for p in parts), default=0)
    for p in parts:
        for e, x in enumerate(p.expert_tokens):
            load[e] += x
    total = sum(load)
    fallbacks = list(dict.fromkeys(p.compile_fallback for p in parts if p.compile_fallback))
    stats = {
        "num_workers": len(parts),
        "batches": batches,
        "examples": len(gens),
        "new_tokens": sum(p.new_tokens for p in parts),
        "wall_seconds": wall,
        "model_seconds_per_worker": [p.seconds for p in parts],
        "load_seconds_per_worker": [p.load_seconds for p in parts],
        "explanations_per_second": len(gens) / max(1e-9, wall),
        "compile_fallback": "; ".join(fallbacks) or None,
    }
    return gens, [x / total for x in load] if total else [], stats


# ---------------------------------------------------------------------------------------- driver
def absolutize(cfg: EvalConfig) -> None:
    """Ray workers do not share the driver's working directory: local paths are made absolute."""

    def fix(url: str) -> str:
        return os.path.abspath(url) if url and storage.protocol_of(url) == "file" else url

    cfg.data, cfg.out, cfg.llm_path = fix(cfg.data), fix(cfg.out), fix(cfg.llm_path)
    if cfg.checkpoint and cfg.checkpoint != ZERO_SHOT:
        cfg.checkpoint = fix(cfg.checkpoint)
    if "llm_path" in cfg.expect_model:
        cfg.expect_model["llm_path"] = fix(str(cfg.expect_model["llm_path"]))
    cfg.encoder_path, cfg.wandb_dir = fix(cfg.encoder_path), fix(cfg.wandb_dir)


def evaluate(cfg: EvalConfig, encoder: Any = None) -> dict[str, Any]:
    """Preflight, generate on Ray workers, score, write the report; returns the results dict."""
    from seller_dist.eval.generations import write_generations
    from seller_dist.eval.report import compile_fallback_warning, write_report
    from seller_dist.eval.scoring import score_generations

    absolutize(cfg)
    manifest = load_manifest(cfg)
    trained = resolve_model(cfg, manifest)
    check_reference_group(cfg, manifest)
    system = cfg.system or describe_system(trained.model)
    stage.info(
        f"[eval] {system}: {trained.source} (step {trained.step}) on {manifest.count(cfg.split)} "
        f"'{cfg.split}' examples{f' (first {cfg.limit})' if cfg.limit else ''}, references {cfg.references}, "
        f"{cfg.workers.num_workers} Ray worker(s)"
    )
    gens, load, stats = generate_with_ray(cfg, trained, system, manifest)
    gen_url = storage.join(cfg.out, GENERATIONS_FILE)
    write_generations(gen_url, gens, cfg.storage)
    stage.info(
        f"[eval] {len(gens)} explanations in {stats['wall_seconds']:.1f}s "
        f"({stats['explanations_per_second']:.2f}/s) -> {gen_url}"
    )
    if stats["compile_fallback"]:
        stage.info(f"[eval] warning: {compile_fallback_warning(stats['compile_fallback'])}")
    results = score_generations(gen_url, cfg.data, cfg, encoder=encoder)
    if load:
        results["expert_load"] = load
    results["generation"] = {**dataclasses.asdict(cfg.generation), **stats}
    results["run_config"] = {
        "checkpoint": trained.source,
        "step": trained.step,
        "model": dataclasses.asdict(trained.model),
        "train_config": trained.train_config,
        "trained_on_manifest_sha256": trained.manifest_sha256,
        "evaluated_manifest_sha256": hashlib.sha256(
            storage.read_bytes(storage.join(cfg.data, "manifest.json"), cfg.storage)
        ).hexdigest(),
    }
    paths = write_report(results, cfg.out, storage_cfg=cfg.storage)
    stage.info(f"[eval] report: {paths.get('markdown')}")
    return results
