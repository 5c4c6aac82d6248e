"""`seller-dist experiment`: the results table in one command.
One prepared dataset, one frozen LLM, a grid of systems x seeds with the same budget each: every cell is
trained by `seller-dist train`'s job (a system with `model.adapter: none` is not) and scored by the eval
job, and `<out>/results.json` / `results.md` hold the mean ± std over seeds and the per-seed rows; a
rerun skips finished cells (docs/results.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from seller_dist import storage
from seller_dist.config import (
    ConfigError,
    EvalConfig,
    ExperimentConfig,
    PrepConfig,
    TrainConfig,
    dotted_items,
    load_config,
    to_dict,
)
from seller_dist.console import local_log_path, stage_console
from seller_dist.data.shards import Manifest
from seller_dist.eval.report import markdown_table
from seller_dist.logs import stage_log
from seller_dist.version import code_version, provenance

RESULT_FILE = "result.json"
TRAIN_FILE = "train.json"
STAGES_FILE = "stages.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"

stage = stage_log(__name__)  # the job's stage lines (seller_dist/logs.py)


class StaleCellError(ConfigError):
    """A finished cell of the output folder was made with another config."""


# ----------------------------------------------------------------------------------- small pieces
def _kv(key: str, value: Any) -> str:
    """One `--set` override; the value as JSON (valid YAML) so strings stay strings."""
    return f"{key}={json.dumps(value)}"


def overrides_of(tree: dict[str, Any]) -> list[str]:
    return [_kv(k, v) for k, v in dotted_items(tree).items()]


def _drop(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    flat = dotted_items(d)
    return {k: v for k, v in flat.items() if not any(k == x or k.startswith(x + ".") for x in keys)}


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ cells
@dataclasses.dataclass
class Cell:
    system: str
    seed: int
    overrides: dict[str, Any]  # flattened TrainConfig overrides of the system

    @property
    def trained(self) -> bool:
        return self.overrides.get("model.adapter") != "none"

    @property
    def run_name(self) -> str:
        return f"{self.system}-seed{self.seed}"

    def dir(self, out: str) -> str:
        return storage.join(out, "cells", self.system, f"seed-{self.seed}")


def grid(
    cfg: ExperimentConfig, systems: list[str] | None = None, seeds: list[int] | None = None
) -> list[Cell]:
    """Cells in run order: seed after seed, systems in config order."""
    for s in systems or []:
        if s not in cfg.systems:
            raise ConfigError(f"--systems: '{s}' is not a system of this experiment ({list(cfg.systems)})")
    for s in seeds or []:
        if s not in cfg.seeds:
            raise ConfigError(f"--seeds: {s} is not a seed of this experiment ({cfg.seeds})")
    names = [n for n in cfg.systems if not systems or n in systems]
    return [
        Cell(n, seed, dotted_items(cfg.systems[n]))
        for seed in cfg.seeds
        if not seeds or seed in seeds
        for n in names
    ]


def train_config_for(cfg: ExperimentConfig, cell: Cell, data: str, llm: str) -> TrainConfig:
    """The cell's TrainConfig: the experiment's defaults < `train` < the system < the grid's own keys."""
    from seller_dist.train.driver import default_config_path

    steps = cfg.budget.max_steps
    overrides = [
        "checkpoint.every_steps=0",  # one checkpoint, at the end
        "logging.wandb=disabled",
        _kv("logging.wandb_dir", storage.join(cfg.out, "wandb")),
        f"logging.every_steps={max(1, steps // 5)}",
        *overrides_of(cfg.train),
        *[_kv(k, v) for k, v in cell.overrides.items() if not (not cell.trained and k == "model.adapter")],
        _kv("data.manifest", data),
        _kv("model.llm_path", llm),
        _kv("storage_path", storage.join(cfg.out, "runs")),
        _kv("run_name", cell.run_name),
        f"max_steps={steps}",
        f"seed={cell.seed}",
        f"data.seed={cell.seed}",
    ]
    try:
        return load_config(TrainConfig, cfg.train_config or default_config_path(), overrides)
    except ConfigError as e:
        raise ConfigError(f"systems.{cell.system}: {e}") from None


def eval_config_for(
    cfg: ExperimentConfig, cell: Cell, data: str, llm: str, tcfg: TrainConfig, checkpoint: str
) -> EvalConfig:
    from seller_dist.eval.job import ZERO_SHOT

    overrides = [
        *overrides_of(cfg.eval),
        _kv("data", data),
        _kv("out", storage.join(cell.dir(cfg.out), "eval")),
        _kv("system", cell.system),
        f"limit={cfg.budget.eval_examples}",
        f"generation.seed={cell.seed}",
    ]
    if cell.trained:
        overrides.append(_kv("checkpoint", checkpoint))
    else:  # the frozen LLM with the prompt the system's model config writes, no adapter
        model = {**to_dict(tcfg.model), "adapter": "none"}
        overrides += [_kv("checkpoint", ZERO_SHOT), _kv("llm_path", llm), _kv("expect_model", model)]
    return load_config(EvalConfig, None, overrides)


VOLATILE_EVAL_KEYS = ("workers", "wandb", "wandb_project", "wandb_dir", "encoder_device", "storage")


def fingerprint(
    cfg: ExperimentConfig, cell: Cell, ecfg: EvalConfig, llm_id: dict[str, Any], manifest_sha: str
) -> str:
    """What decides a cell's numbers, as given: the train YAML's text, every key the experiment sets,
    the LLM and the dataset (`Manifest.sha256`: its shards, not when or by which commit they were
    written). Not where things are written, nor how many eval workers generate (the
    eval's results do not depend on it); a config key added to the code later with its default does
    not change it either (the code's version is in each result instead)."""
    from seller_dist.train.driver import default_config_path

    train_yaml = Path(cfg.train_config or default_config_path()).read_bytes()
    parts = {
        "train_yaml_sha256": hashlib.sha256(train_yaml).hexdigest(),
        "train": dotted_items(cfg.train),
        "system": cell.overrides,
        "max_steps": cfg.budget.max_steps if cell.trained else None,
        "seed": cell.seed if cell.trained or ecfg.generation.do_sample else None,
        "eval": _drop(cfg.eval, VOLATILE_EVAL_KEYS),
        "eval_examples": cfg.budget.eval_examples,
        "llm": llm_id,
        "manifest_sha256": manifest_sha,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ train and evaluate
_ENCODERS: dict[tuple[str, str], Any] = {}


def _evaluate(ecfg: EvalConfig) -> dict[str, Any]:
    """The eval job (as `seller-dist eval` runs it), with one sentence encoder for every cell."""
    from seller_dist.eval.job import evaluate
    from seller_dist.eval.scoring import text_encoder

    key = (ecfg.encoder_path, ecfg.encoder_device)
    if key not in _ENCODERS:
        _ENCODERS[key] = text_encoder(ecfg)
    return evaluate(ecfg, encoder=_ENCODERS[key])


def _read_json(url: str, cfg: ExperimentConfig) -> Any:
    return storage.read_json(url, cfg.storage) if storage.exists(url, cfg.storage) else None


def _stale(cell: Cell, cfg: ExperimentConfig, what: str) -> StaleCellError:
    return StaleCellError(
        f"{storage.join(cell.dir(cfg.out), what)} was made with another config than this one: give the "
        f"experiment a new `out`, or delete {cell.dir(cfg.out)} and {storage.join(cfg.out, 'runs', cell.run_name)} "
        "to run that cell again"
    )


def run_cell(
    cfg: ExperimentConfig,
    cell: Cell,
    data: str,
    llm: str,
    llm_id: dict[str, Any],
    manifest_sha: str,
    done: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Train (when the system trains) and evaluate one cell; its result record (also result.json).
    `done` maps fingerprints of cells finished in this grid to their records (for reuse)."""
    tcfg = train_config_for(cfg, cell, data, llm)
    ecfg = eval_config_for(
        cfg, cell, data, llm, tcfg, storage.join(cfg.out, "runs", cell.run_name, "checkpoints")
    )
    fp = fingerprint(cfg, cell, ecfg, llm_id, manifest_sha)
    cell_dir = cell.dir(cfg.out)
    result_url = storage.join(cell_dir, RESULT_FILE)
    old = _read_json(result_url, cfg)
    if old is not None:
        if old.get("fingerprint") != fp:
            raise _stale(cell, cfg, RESULT_FILE)
        stage.info(f"[experiment] {cell.system} seed {cell.seed}: finished before ({result_url})")
        return old
    if not cell.trained and fp not in done:  # another invocation (--seeds) may have evaluated it
        for seed in cfg.seeds:
            other = _read_json(
                storage.join(Cell(cell.system, seed, cell.overrides).dir(cfg.out), RESULT_FILE), cfg
            )
            if other is not None and other.get("fingerprint") == fp and not other.get("reused_from"):
                done[fp] = other
                break
    if not cell.trained and fp in done:  # same LLM, greedy: the seed changes nothing
        src = done[fp]
        record = {**src, "seed": cell.seed, "reused_from": f"seed-{src['seed']}", "eval_seconds": 0.0}
        record["finished"] = _now()
        storage.write_json(result_url, record, cfg.storage)
        stage.info(f"[experiment] {cell.system} seed {cell.seed}: same as seed {src['seed']} (not trained)")
        return record

    train_seconds, step = 0.0, 0
    if cell.trained:
        train_url = storage.join(cell_dir, TRAIN_FILE)
        state = _read_json(train_url, cfg)
        run_dir = storage.join(cfg.out, "runs", cell.run_name)
        if state is not None and state.get("fingerprint") != fp:
            raise _stale(cell, cfg, TRAIN_FILE)
        if state is None and storage.exists(run_dir, cfg.storage):
            raise StaleCellError(
                f"{run_dir} exists but {train_url} does not: a run this experiment did not start; "
                f"delete {run_dir} or give the experiment a new `out`"
            )
        if state is not None and state.get("finished"):
            train_seconds, step = float(state["train_seconds"]), int(state["step"])
            stage.info(f"[experiment] {cell.system} seed {cell.seed}: trained before (step {step})")
        else:
            stage.info(
                f"[experiment] {cell.system} seed {cell.seed}: train {cfg.budget.max_steps} steps "
                f"({', '.join(f'{k}={v}' for k, v in cell.overrides.items()) or 'the train config as is'})"
            )
            storage.write_json(
                train_url, {"fingerprint": fp, "finished": False, "started": _now()}, cfg.storage
            )
            t0 = time.monotonic()
            from seller_dist.train.driver import train

            step = train(tcfg).checkpoint.step
            train_seconds = time.monotonic() - t0
            if step != cfg.budget.max_steps:
                raise RuntimeError(
                    f"{cell.run_name}: the newest committed checkpoint is step {step}, the budget is "
                    f"{cfg.budget.max_steps} steps"
                )
            storage.write_json(
                train_url,
                {
                    "fingerprint": fp,
                    "finished": True,
                    "step": step,
                    "train_seconds": train_seconds,
                    "at": _now(),
                },
                cfg.storage,
            )
    stage.info(f"[experiment] {cell.system} seed {cell.seed}: evaluate")
    t0 = time.monotonic()
    results = _evaluate(ecfg)
    eval_seconds = time.monotonic() - t0
    from seller_dist.eval.report import flat_metrics

    flat = flat_metrics(results)
    record = {
        "system": cell.system,
        "seed": cell.seed,
        "fingerprint": fp,
        "trained": cell.trained,
        "overrides": cell.overrides,
        "step": int(results.get("run_config", {}).get("step") or step),
        "num_examples": results.get("num_examples"),
        "metrics": {k: _num(m) for k, (m, _) in flat.items()},
        "example_std": {k: _num(s) for k, (_, s) in flat.items()},
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "eval_dir": ecfg.out,
        "code_version": code_version(),
        "provenance": provenance(),
        "finished": _now(),
    }
    storage.write_json(result_url, record, cfg.storage)
    return record


# ------------------------------------------------------------------------------ data and the LLM
def prepare_data(cfg: ExperimentConfig) -> tuple[str, float | None]:
    """(dataset root, prep seconds; None when it was prepared before)."""
    data = cfg.data or storage.join(cfg.out, "data")
    if storage.exists(storage.join(data, "manifest.json"), cfg.storage):
        if cfg.prep and cfg.data:
            stage.info(f"[experiment] {data} is prepared already: the `prep` keys are not used")
        return data, None
    from data_prep.pipeline import DEFAULT_CONFIG, run_prep

    # the packaged prep config is the synthetic source's: another source starts from PrepConfig's
    # defaults, so the synthetic generator's source_options are not handed to (and recorded for) it
    base = cfg.prep_config or (
        str(DEFAULT_CONFIG) if cfg.prep.get("source", "synthetic") == "synthetic" else None
    )
    prep_cfg = load_config(PrepConfig, base, [*overrides_of(cfg.prep), _kv("output", data)])
    stage.info(f"[experiment] prepare {prep_cfg.source} -> {data}")
    t0 = time.monotonic()
    run_prep(prep_cfg)
    return data, time.monotonic() - t0


def llm_identity(cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    if cfg.llm.path:
        return {"path": cfg.llm.path}
    return {**to_dict(cfg.llm), "seed": seed if cfg.llm.per_seed else 0}


def llm_for_seed(cfg: ExperimentConfig, data: str, seed: int) -> tuple[str, float | None]:
    """(LLM path, bootstrap seconds; None when it was there before): `llm.path`, or a small LLM
    bootstrapped on the dataset's text (once, or once per seed with `llm.per_seed`)."""
    if cfg.llm.path:
        return cfg.llm.path, None
    if storage.protocol_of(cfg.out) != "file":
        raise ConfigError(
            f"out={cfg.out}: a bootstrapped LLM is written to a local folder; give a local `out` or `llm.path`"
        )
    name = f"llm-seed{seed}" if cfg.llm.per_seed else "llm"
    final = Path(cfg.out) / name
    if (final / "config.json").exists():
        return str(final), None
    from seller_dist.model.bootstrap import BootstrapConfig, bootstrap_llm

    s = seed if cfg.llm.per_seed else 0
    tmp = Path(cfg.out) / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    stage.info(f"[experiment] bootstrap a small LLM on the dataset's text (seed {s}) -> {final}")
    t0 = time.monotonic()
    llm = cfg.llm
    boot = BootstrapConfig(
        data, str(tmp), vocab_size=llm.vocab_size, hidden=llm.hidden, steps=llm.bootstrap_steps
    )
    bootstrap_llm(dataclasses.replace(boot, max_len=llm.max_len, copy_fraction=llm.copy_fraction, seed=s))
    os.replace(tmp, final)  # a folder with config.json is a whole LLM
    return str(final), time.monotonic() - t0


# ---------------------------------------------------------------------------------------- tables
def summarize(records: list[dict[str, Any]], systems: list[str]) -> dict[str, dict[str, Any]]:
    """system -> metric -> {mean, std (sample, n - 1; None for one seed), n, seeds, values}."""
    out: dict[str, dict[str, Any]] = {}
    for system in systems:
        rows = sorted((r for r in records if r["system"] == system), key=lambda r: r["seed"])
        names = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
        per: dict[str, Any] = {}
        for m in names:
            pairs = [(r["seed"], r["metrics"][m]) for r in rows if r["metrics"].get(m) is not None]
            if not pairs:
                continue
            vals = [v for _, v in pairs]
            per[m] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "n": len(vals),
                "seeds": [s for s, _ in pairs],
                "values": vals,
            }
        if rows:
            out[system] = per
    return out


def fmt_value(x: float | None, like: float | None = None) -> str:
    """4 decimals, 2 at or above 10 (BLEU, ROUGE are on 0-100); `like` picks the scale for a std."""
    if x is None:
        return "—"
    ref = abs(like if like is not None else x)
    return f"{x:.2f}" if ref >= 10 else f"{x:.4f}"


def fmt_stat(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "—"
    mean = fmt_value(stat["mean"])
    return mean if stat["std"] is None else f"{mean} ± {fmt_value(stat['std'], stat['mean'])}"


YARDSTICK_PARTS = ("reference", "generic", "none")  # scored the same way, independent of the system
# the learned simulator is fitted on the dataset's own split, never on a system's explanations: its
# hold-out AUC and its verdict (informative or not) are the same for every system of a dataset
SYSTEM_INDEPENDENT = ("simulator/learned/holdout_auc", "simulator/learned/informative")
SECTION_ORDER = ("text", "grounding", "retrieval", "simulator", "by_reference")


def metric_order(name: str) -> tuple[int, str]:
    """Reading order: text, grounding, retrieval, simulator, per reference kind; then by name."""
    head = name.split("/", 1)[0]
    return (SECTION_ORDER.index(head) if head in SECTION_ORDER else len(SECTION_ORDER), name)


def metric_kind(name: str) -> str:
    """ "system" (a property of the system's explanations), "yardstick" (the references, a generic
    sentence, no explanation, the learned simulator's AUC and informative verdict: the same for every
    system), "count"
    (examples per reference kind) or "group" (per reference kind; shown when the data mixes kinds)."""
    parts = name.split("/")
    if parts[-1] == "num_examples":
        return "count"
    if parts[0] == "by_reference":
        return "group"
    if any(p in YARDSTICK_PARTS for p in parts[1:]) or name in SYSTEM_INDEPENDENT:
        return "yardstick"
    return "system"


def mixed_reference_kinds(records: list[dict[str, Any]]) -> bool:
    """The scored examples hold more than one reference kind (e.g. real reviews and templates)."""
    kinds = {k for r in records for k, v in r["metrics"].items() if k.endswith("/num_examples") and v}
    return len(kinds) > 1


def _code(p: dict[str, Any]) -> str:
    commit, tree = (p.get("commit") or "unknown commit")[:12], p.get("tree", "unknown")
    if tree == "unknown":
        return f"{commit} (tree unknown: {p.get('git_error', 'not recorded')})"
    return f"{commit} ({tree} tree)"


def code_line(results: dict[str, Any]) -> str:
    """The commit and tree state of the table's invocation and of every cell (the cells of one grid
    can run at different commits: each records its own)."""
    cells: dict[str, int] = {}
    for r in results["runs"]:
        if r.get("provenance"):
            key = _code(r["provenance"])
            cells[key] = cells.get(key, 0) + 1
    line = f"table written at {_code(results['provenance'])}"
    if cells:
        line += "; cells: " + ", ".join(f"{n} at {k}" for k, n in cells.items())
    return line


def markdown(results: dict[str, Any]) -> str:
    summary, records = results["summary"], results["runs"]
    systems = [s for s in results["systems"] if s in summary]
    wall = results["wall_seconds"]
    budget = results["budget"]
    parts = [
        f"# Experiment: {results['name']}",
        "",
        f"- dataset `{results['data']}` (manifest sha256 {results['manifest_sha256'][:12]}), "
        f"{budget['eval_examples'] or 'all'} test examples scored per run "
        f"({'the first ones in shard order, the same for every run' if budget['eval_examples'] else 'the whole split'})",
        f"- LLM `{results['llm']}`; {budget['max_steps']} optimizer steps per trained system; "
        f"seeds {results['seeds']}",
        f"- code: {code_line(results)}",
        f"- wall time: {wall['total']:.0f} s for the grid (prep {wall['prep']:.0f} s, LLM {wall['llm']:.0f} s, "
        f"training {wall['train']:.0f} s, evaluation {wall['eval']:.0f} s); the last invocation that ran cells {wall['this_invocation']:.0f} s",
        "",
        "## Mean ± std over seeds",
        "",
        "Each cell: the mean over seeds of the run's mean over the test examples, ± the sample standard "
        "deviation over seeds (n - 1); a cell without ± had one seed.",
        "",
    ]
    names = sorted({m for s in systems for m in summary[s]}, key=metric_order)
    kinds = ("system", "group") if mixed_reference_kinds(records) else ("system",)
    metrics = [m for m in names if metric_kind(m) in kinds]
    parts.append(
        markdown_table(
            ["metric", *systems], [[m, *[fmt_stat(summary[s].get(m)) for s in systems]] for m in metrics]
        )
    )
    yard = [m for m in names if metric_kind(m) == "yardstick"]
    if yard:
        rows = []
        for m in yard:
            vals = {r["metrics"].get(m) for r in records if r["metrics"].get(m) is not None}
            rows.append(
                [m, fmt_value(vals.pop()) if len(vals) == 1 else "differs between runs: results.json"]
            )
        parts += [
            "",
            "Yardsticks: the same metrics on the dataset's references, on a generic sentence and on no "
            "explanation (and the learned simulator's hold-out AUC and whether it is informative, 1 or "
            "0), the same for every run: what a "
            "system can reach and what it must beat.",
            "",
            markdown_table(["metric", "every run"], rows),
        ]
    reused = sorted({r["system"] for r in records if r.get("reused_from")})
    if reused:
        parts += [
            "",
            f"Not trained and evaluated once ({', '.join(reused)}): the same LLM and greedy decoding give "
            "the same numbers for every seed, so its std over seeds is 0 by construction.",
        ]
    shown = [m for m in results["table_metrics"] if any(m in r["metrics"] for r in records)]
    rows = []
    for s in systems:
        for r in sorted((r for r in records if r["system"] == s), key=lambda r: r["seed"]):
            rows.append(
                [s, str(r["seed"]), str(r["step"])]
                + [fmt_value(r["metrics"].get(m)) for m in shown]
                + [f"{r['train_seconds']:.0f}", f"{r['eval_seconds']:.0f}"]
            )
    parts += [
        "",
        "## Per seed",
        "",
        "The run's mean over the test examples (every metric of every run: results.json and "
        "cells/<system>/seed-<S>/result.json; the eval report: cells/<system>/seed-<S>/eval/report.md).",
        "",
        markdown_table(["system", "seed", "step", *shown, "train s", "eval s"], rows),
    ]
    return "\n".join(parts) + "\n"


def write_results(
    cfg: ExperimentConfig,
    records: list[dict[str, Any]],
    data: str,
    manifest_sha: str,
    llm: str,
    stages: dict[str, Any],
    invocation_seconds: float,
) -> dict[str, Any]:
    systems = list(cfg.systems)
    train_s = sum(r["train_seconds"] for r in records)
    eval_s = sum(r["eval_seconds"] for r in records)
    prep_s = float(stages.get("prep_seconds") or 0.0)
    llm_s = float(sum((stages.get("llm_seconds") or {}).values()))
    results = {
        "name": cfg.name,
        "config": to_dict(cfg),
        "provenance": provenance(),
        "data": data,
        "manifest_sha256": manifest_sha,
        "llm": llm,
        "systems": systems,
        "seeds": cfg.seeds,
        "budget": to_dict(cfg.budget),
        "table_metrics": cfg.table_metrics,
        "summary": summarize(records, systems),
        "runs": sorted(records, key=lambda r: (systems.index(r["system"]), r["seed"])),
        "wall_seconds": {
            "prep": round(prep_s, 1),
            "llm": round(llm_s, 1),
            "train": round(train_s, 1),
            "eval": round(eval_s, 1),
            "total": round(prep_s + llm_s + train_s + eval_s, 1),
            "this_invocation": round(invocation_seconds, 1),
        },
        "written": _now(),
    }
    storage.write_json(storage.join(cfg.out, RESULTS_JSON), results, cfg.storage)
    storage.write_bytes(storage.join(cfg.out, RESULTS_MD), markdown(results).encode(), cfg.storage)
    return results


# ------------------------------------------------------------------------------------------ main
def run_experiment(
    cfg: ExperimentConfig,
    systems: list[str] | None = None,
    seeds: list[int] | None = None,
    table_only: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the grid (or with table_only, only collect the finished cells); returns results.json's dict.
    `quiet`: Ray's, DeepSpeed's and the libraries' own output goes to `<out>/experiment.log`, not the
    console (table_only runs nothing, so it stays as it is)."""
    with stage_console("experiment", local_log_path(cfg.out, "experiment.log"), quiet and not table_only):
        return _run_grid(cfg, systems, seeds, table_only)


def _run_grid(
    cfg: ExperimentConfig, systems: list[str] | None, seeds: list[int] | None, table_only: bool
) -> dict[str, Any]:
    t0 = time.monotonic()
    cells = grid(cfg, systems, seeds)
    stages_url = storage.join(cfg.out, STAGES_FILE)
    stages = _read_json(stages_url, cfg) or {}
    if table_only:
        data = cfg.data or storage.join(cfg.out, "data")
    else:
        data, prep_s = prepare_data(cfg)
        if prep_s is not None:
            stages["prep_seconds"] = prep_s
            storage.write_json(stages_url, stages, cfg.storage)
    # the dataset's identity as a resumed stream checks it (its shards' sha256s and counts): a prep rerun
    # that writes the same shards at another time or commit keeps every finished cell
    manifest_sha = Manifest.load(data, cfg.storage).sha256()
    records: list[dict[str, Any]] = []
    done: dict[str, dict[str, Any]] = {}
    llm_paths: dict[int, str] = {}
    for cell in cells:
        if table_only:
            rec = _read_json(storage.join(cell.dir(cfg.out), RESULT_FILE), cfg)
            if rec is not None:
                records.append(rec)
            continue
        if cell.seed not in llm_paths:
            llm_paths[cell.seed], llm_s = llm_for_seed(cfg, data, cell.seed)
            if llm_s is not None:
                stages.setdefault("llm_seconds", {})[Path(llm_paths[cell.seed]).name] = llm_s
                storage.write_json(stages_url, stages, cfg.storage)
        rec = run_cell(
            cfg, cell, data, llm_paths[cell.seed], llm_identity(cfg, cell.seed), manifest_sha, done
        )
        done.setdefault(rec["fingerprint"], rec)
        records.append(rec)
    llm = cfg.llm.path or storage.join(cfg.out, "llm-seed<S>" if cfg.llm.per_seed else "llm")
    invocation = time.monotonic() - t0
    if table_only:  # keep the time of the last invocation that ran cells
        prev = _read_json(storage.join(cfg.out, RESULTS_JSON), cfg) or {}
        invocation = float(prev.get("wall_seconds", {}).get("this_invocation", 0.0))
    results = write_results(cfg, records, data, manifest_sha, llm, stages, invocation)
    stage.info(f"[experiment] {len(records)}/{len(cells)} cells -> {storage.join(cfg.out, RESULTS_MD)}")
    return results
