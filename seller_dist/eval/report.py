"""The evaluation report people read: report.json, report.md, PNG plots, wandb; and
`seller-dist report RUN_A RUN_B ...`, one side-by-side table of several evaluated runs. All of them show one
flat metric list (`flat_metrics`) under the same names ("retrieval/generated/hr@10"), so a number in a table
can be found in report.json and in wandb by its name.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from seller_dist import storage
from seller_dist.config import StorageConfig
from seller_dist.eval.references import GROUPS as REFERENCE_GROUPS
from seller_dist.redact import scrub

REPORT_JSON = "report.json"


# ----------------------------------------------------------------------------------- flattening
def _is_stat(v: Any) -> bool:
    return isinstance(v, dict) and "mean" in v and "std" in v


def flat_metrics(results: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """name -> (mean, std) for every metric in a results dict, in a stable reading order."""
    out: dict[str, tuple[float, float]] = {}

    def walk(prefix: str, node: Any) -> None:
        out.update({name: (float(st["mean"]), float(st["std"])) for name, st in _stats(node, prefix).items()})

    for group, entry in _groups(results):  # real references first, then templated, then all
        out[f"by_reference/{group}/num_examples"] = (float(entry["num_examples"]), float("nan"))
        if entry["num_examples"] == results.get("num_examples"):
            continue  # one kind covers every example: its rows would repeat the overall ones
        for section in ("text", "grounding"):
            if section in entry:
                walk(f"by_reference/{group}/{section}", entry[section])
    for section in ("text", "grounding", "retrieval", "simulator"):
        if section in results:
            walk(section, results[section])
    learned = results.get("simulator", {}).get("learned")
    if isinstance(learned, dict):
        out["simulator/learned/holdout_auc"] = (float(learned["holdout_auc"]), float("nan"))
        if "informative" in learned:
            out["simulator/learned/informative"] = (float(bool(learned["informative"])), float("nan"))
    return out


def _stats(node: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every {mean, std} of a results subtree by its path under `prefix` ("generated/hr@10")."""
    if _is_stat(node):
        return {prefix: node}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_stats(v, f"{prefix}/{k}" if prefix else k))
    return out


def _groups(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group, entry) of results["by_reference"] in report order: real, template."""
    by = results.get("by_reference") or {}
    return [(g, by[g]) for g in REFERENCE_GROUPS if isinstance(by.get(g), dict)]


def simulator_warning(results: dict[str, Any]) -> str | None:
    """The note every table carries when the learned simulator is marked uninformative."""
    learned = results.get("simulator", {}).get("learned")
    if not isinstance(learned, dict) or learned.get("informative", True):
        return None
    reasons = (learned.get("informativeness") or {}).get("reasons") or ["marked uninformative"]
    return (
        "learned simulator UNINFORMATIVE: its acceptance numbers do not measure explanation quality ("
        + "; ".join(reasons)
        + ")"
    )


def compile_fallback_warning(reason: str) -> str:
    """What the console and report.md say when generation.compile was on but the decode step did not
    compile (seller_dist.eval.decode): the tokens are the eager ones, the timings are not compiled."""
    return (
        "generation.compile=true, but the decode step did not compile: every explanation was decoded "
        f"without compile (same tokens, eager speed): {reason}"
    )


def fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _side_by_side(section: dict[str, Any], systems: list[str]) -> str:
    present = [s for s in systems if isinstance(section.get(s), dict)]
    metrics: list[str] = []
    for s in present:
        metrics += [m for m, v in section[s].items() if _is_stat(v) and m not in metrics]
    rows = [
        [m] + [fmt(section[s][m]["mean"], section[s][m]["std"]) if m in section[s] else "—" for s in present]
        for m in metrics
    ]
    return markdown_table(["metric", *present], rows)


def _by_group(columns: list[tuple[str, dict[str, Any]]], section: str) -> str:
    """A row per metric of `section`, a column per reference group (real first) and all."""
    flats = [_stats(entry.get(section, {})) for _, entry in columns]
    metrics = list(dict.fromkeys(m for f in flats for m in f))
    rows = [[m] + [fmt(f[m]["mean"], f[m]["std"]) if m in f else "—" for f in flats] for m in metrics]
    return markdown_table(["metric", *(name for name, _ in columns)], rows)


def markdown(results: dict[str, Any]) -> str:
    """report.md: the run's numbers, systems side by side, mean ± std."""
    system = results.get("system", "?")
    parts = [
        f"# Evaluation: {system}",
        "",
        f"{results.get('num_examples')} examples of split `{results.get('split')}` of `{results.get('data')}`; "
        f"generations `{results.get('generations')}`. Mean ± std (docs/evaluation.md says which std).",
    ]
    warning = simulator_warning(results)
    if warning:
        parts += ["", f"**Warning: {warning}.**"]
    fallback = (results.get("generation") or {}).get("compile_fallback")
    if fallback:
        parts += ["", f"**Warning: {compile_fallback_warning(fallback)}**"]
    groups = _groups(results)
    if groups:
        refs = results.get("references", {})
        parts += [
            "",
            "## Reference kinds",
            "",
            f"`eval.references={refs.get('mode', 'all')}`: "
            + ", ".join(f"{e['num_examples']} {g}" for g, e in groups)
            + f" references (explanation sources {refs.get('explanation_sources', {})}). Text and "
            "grounding are scored for each kind alone (real first), then over all scored examples.",
        ]
    text = results.get("text", {})
    scored = [(g, e) for g, e in groups if e.get("num_examples")]
    columns = [(f"{g} ({e['num_examples']})", e) for g, e in scored] + [
        (f"all ({results.get('num_examples')})", results)
    ]
    if text and groups:
        parts += ["", "## Text quality", "", _by_group(columns, "text")]
    elif text:
        rows = [[m, fmt(v["mean"], v["std"])] for m, v in text.items() if _is_stat(v)]
        parts += ["", "## Text quality", "", markdown_table(["metric", system], rows)]
    g = results.get("grounding", {})
    if g and groups:
        parts += ["", "## Sequence grounding", "", _by_group(columns, "grounding")]
    elif g:
        parts += ["", "## Sequence grounding", "", _side_by_side(g, ["generated", "reference"])]
    if "attention_top_is_cited" in g:
        a = g["attention_top_is_cited"]
        parts += [
            "",
            f"Fusion attention: top-attended event is the cited one in {fmt(a['mean'], a['std'])}.",
        ]
    r = results.get("retrieval", {})
    if r:
        parts += [
            "",
            f"## Retrieval utility (target among {r.get('num_candidates', float('nan')):.1f} candidates on average)",
            "",
            _side_by_side(r, ["generated", "reference", "generic"]),
        ]
    sim = results.get("simulator", {})
    for name in ("learned", "exact"):
        if name in sim:
            acc = sim[name]["acceptance"]
            rows = [
                [s, fmt(acc[s]["mean"], acc[s]["std"])]
                for s in ("generated", "reference", "generic", "none")
                if s in acc
            ]
            title = "learned simulator" if name == "learned" else "exact simulator (synthetic latent taste)"
            if name == "learned" and warning:
                title += " (UNINFORMATIVE, see the warning above)"
            parts += [
                "",
                f"## Simulated acceptance: {title}",
                "",
                markdown_table(["explanation", "P(accept)"], rows),
            ]
            if name == "learned":
                parts += [
                    "",
                    f"Simulator hold-out AUC: {sim[name]['holdout_auc']:.4f} "
                    f"({sim[name]['holdout_records']} hold-out records of split `{sim[name]['train_split']}`)"
                    + "".join(
                        f"; shown {c}: {v:.4f}"
                        for c, v in sim[name].get("holdout_auc_by_condition", {}).items()
                    )
                    + ".",
                ]
    if "learned_skipped" in sim:
        parts += ["", f"Learned simulator skipped: {sim['learned_skipped']}."]
    if "expert_load" in results:
        parts += ["", "## Expert load", "", "See expert_load.png; values in report.json."]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------- plots
def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        written.append(out / name)
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)

    panels = []
    system = results.get("system", "generated")
    # one bar series per reference kind (real first, then templated), then all examples
    scored = [(f"{g} refs ({e['num_examples']})", e) for g, e in _groups(results) if e.get("num_examples")]
    series = [*scored, (system if not scored else f"all ({results.get('num_examples')})", results)]
    texts = {name: {m: v for m, v in e.get("text", {}).items() if _is_stat(v)} for name, e in series}
    for title, is_pct in (("text quality (0-100)", True), ("text quality", False)):
        # BLEU / ROUGE on 0-100, the rest on 0-1 (or DIV: shared aspects)
        part = {
            name: {m: v for m, v in t.items() if m.startswith(("bleu", "rouge")) == is_pct}
            for name, t in texts.items()
        }
        if any(part.values()):
            panels.append((title, part))
    for key, title in (("grounding", "sequence grounding"), ("retrieval", "retrieval utility")):
        systems = {}
        for name, entry in series if key == "grounding" else [("", results)]:
            for s, d in entry.get(key, {}).items():
                if isinstance(d, dict) and not _is_stat(d):
                    label = f"{s}, {name}" if name and scored else s
                    systems[label] = {m: v for m, v in d.items() if _is_stat(v)}
        if systems:
            panels.append((title, systems))
    for name in ("learned", "exact"):
        acc = results.get("simulator", {}).get(name, {}).get("acceptance")
        if acc:
            order = [s for s in ("generated", "reference", "generic", "none") if s in acc]
            note = " — UNINFORMATIVE" if name == "learned" and simulator_warning(results) else ""
            panels.append((f"simulated acceptance ({name}){note}", {s: {"P(accept)": acc[s]} for s in order}))
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
        for ax, (title, systems) in zip(axes[:, 0], panels, strict=True):
            metrics = list(dict.fromkeys(m for d in systems.values() for m in d))
            width = 0.8 / max(1, len(systems))
            for j, (s, d) in enumerate(systems.items()):
                xs = [i + j * width for i in range(len(metrics))]
                means = [d[m]["mean"] if m in d else 0.0 for m in metrics]
                stds = [d[m]["std"] if m in d else 0.0 for m in metrics]
                ax.bar(xs, means, width, yerr=stds, capsize=3, label=s)
            ax.set_xticks(
                [i + 0.4 - width / 2 for i in range(len(metrics))], metrics, rotation=20, fontsize=8
            )
            ax.set_title(title)
            ax.legend(fontsize=8)
        save(fig, "metrics.png")
    load = results.get("expert_load")
    if load:
        series = load if isinstance(load, dict) else {"experts": load}
        fig, ax = plt.subplots(figsize=(8, 3))
        width = 0.8 / len(series)
        for j, (name, vals) in enumerate(series.items()):
            ax.bar([i + j * width for i in range(len(vals))], vals, width, label=name)
        ax.set_xlabel("expert")
        ax.set_ylabel("share of routed tokens")
        ax.set_title("expert load")
        ax.legend(fontsize=8)
        save(fig, "expert_load.png")
    ex = results.get("attention_example")
    if ex and ex.get("events"):
        evs = ex["events"]
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(evs) + 1.5))
        colors = ["tab:red" if e["offset"] == ex.get("cited_offset") else "tab:blue" for e in evs]
        ax.barh(range(len(evs)), [e["weight"] for e in evs], color=colors)
        ax.set_yticks(range(len(evs)), [f"{e['action']}: {e['title']}"[:50] for e in evs], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("fusion attention weight (red: the event the reference cites)")
        ax.set_title(f"{ex['key']} -> {ex.get('item_title', '')}"[:90], fontsize=9)
        save(fig, "attention.png")
    return written


# ---------------------------------------------------------------------------------------- wandb
def log_wandb(
    results: dict[str, Any], images: list[Path], mode: str, project: str, wandb_dir: str
) -> str | None:
    """Log every metric (flat names) and the plots; returns the run directory, None when disabled."""
    if mode == "disabled":
        return None
    import wandb

    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        dir=wandb_dir,
        mode=mode,
        name=f"eval-{results.get('system', 'run')}",
        job_type="eval",
        config=scrub(results.get("config", {})),
        reinit="finish_previous",
    )
    try:
        for name, (mean, std) in flat_metrics(results).items():
            run.summary[name] = mean
            if not math.isnan(std):
                run.summary[f"{name}/std"] = std
        if images:
            run.log({p.stem: wandb.Image(str(p)) for p in images})
        return run.dir
    finally:
        run.finish()


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_report(
    results: dict[str, Any],
    out_dir: str,
    wandb_mode: str | None = None,
    storage_cfg: StorageConfig | None = None,
) -> dict[str, str]:
    """report.json (every number + config), report.md and PNG plots under out_dir (a local folder or
    an object-store URL: rendered locally, then uploaded); logs to wandb when `wandb_mode` (default:
    results.config.wandb) is not "disabled". Returns what was written, by name."""
    if storage.protocol_of(out_dir) != "file":
        with tempfile.TemporaryDirectory(prefix="seller-report-") as tmp:
            local = write_report(results, tmp, wandb_mode)
            out = {}
            for name, path in local.items():
                if name == "wandb":
                    out[name] = path
                    continue
                url = storage.join(out_dir, Path(path).name)
                storage.write_bytes(url, Path(path).read_bytes(), storage_cfg)
                out[name] = url
            return out
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(out / REPORT_JSON), "markdown": str(out / "report.md")}
    (out / REPORT_JSON).write_text(json.dumps(scrub(results), indent=2, default=_json_default) + "\n")
    (out / "report.md").write_text(markdown(results))
    images = _plots(results, out)
    paths.update({p.stem: str(p) for p in images})
    cfg = results.get("config", {})
    mode = wandb_mode or cfg.get("wandb", "disabled")
    run_dir = log_wandb(
        results, images, mode, cfg.get("wandb_project", "seller-dist"), cfg.get("wandb_dir", "outputs/wandb")
    )
    if run_dir:
        paths["wandb"] = run_dir
    return paths


# ------------------------------------------------------------------------------------ many runs
def load_run(run: str) -> dict[str, Any]:
    """report.json of a run folder (or the report.json path itself); a clear error when absent."""
    url = run if run.endswith(".json") else storage.join(run.rstrip("/"), REPORT_JSON)
    try:
        return storage.read_json(url)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{run}: no {REPORT_JSON} at {url} (evaluate this run first with `seller-dist eval`)"
        ) from None


def comparison_table(runs: list[str]) -> str:
    """One Markdown table: a row per metric, a column per run (label: system and run folder)."""
    reports = [load_run(r) for r in runs]
    labels = [
        f"{rep.get('system', '?')} ({Path(r.rstrip('/')).name or r})"
        for rep, r in zip(reports, runs, strict=True)
    ]
    return reports_table(reports, labels)


def reports_table(reports: list[dict[str, Any]], labels: list[str], metrics: list[str] | None = None) -> str:
    """`comparison_table` of loaded reports; `metrics` keeps only those rows, in that order."""
    flats = [flat_metrics(rep) for rep in reports]
    names = metrics or list(dict.fromkeys(n for f in flats for n in f))
    rows = [[n] + [fmt(*f[n]) if n in f else "—" for f in flats] for n in names]
    by_warning: dict[str, list[str]] = {}  # runs on one dataset share a simulator: one line per text
    for label, rep in zip(labels, reports, strict=True):
        if w := simulator_warning(rep):
            by_warning.setdefault(w, []).append(label)
    notes = [f"\n**Warning: {', '.join(who)}: {w}.**" for w, who in by_warning.items()]
    return markdown_table(["metric", *labels], rows) + "".join("\n" + n for n in notes)
