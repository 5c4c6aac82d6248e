"""The docs' figures, generated from committed artifacts (the JSON under docs/bench/), so that a table
and the run it reports cannot disagree unnoticed. In any Markdown file of the repository a generated table
sits between `<!-- table: KIND [OPTION=VALUE ...] ARTIFACT [ARTIFACT ...] -->` and
`<!-- /table -->`, and ends with one line per artifact saying where its numbers came from (commit,
tree, date, machine, command; a table of the code itself, CODE_TABLES, names that code instead);
`./launch.sh tables` (`python -m tools.doc_tables`) rewrites every block, `--check` only lists the
stale ones
(tests/unit/test_doc_tables.py fails on any)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools import scaling_model as scaling

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "outputs", ".cache", "node_modules", "build", "dist"}
BLOCK = re.compile(r"<!-- table: (?P<spec>[^\n]*?) -->\n(?P<body>.*?)<!-- /table -->", re.S)

Renderer = Callable[[list[dict[str, Any]], dict[str, str]], str]


# ------------------------------------------------------------------------------------ provenance
def provenance_of(artifact: dict[str, Any]) -> dict[str, Any]:
    """The artifact's provenance (seller_dist.version.provenance); artifacts written before it
    existed are read from their own fields ("git", "machine", "command", "date"), and artifacts that
    recorded no commit from "provenance_from_git_history" (the commit that added the file)."""
    if "provenance" in artifact:
        return artifact["provenance"]
    git = artifact.get("git") or {}
    dirty = git.get("dirty")
    out: dict[str, Any] = {
        "command": artifact.get("command"),
        "date": artifact.get("date"),
        "commit": git.get("commit"),
        "tree": "unknown" if dirty is None else "dirty" if dirty else "clean",
        "machine": artifact.get("machine") or {},
    }
    if "device" in artifact:
        out["machine"] = {**out["machine"], "gpus": [{"name": artifact["device"]}]}
    history = artifact.get("provenance_from_git_history")
    if history:
        out["added_in_commit"] = history["commit_that_added_this_file"]
        out["date"] = out["date"] or history.get("committed")
    return out


def _machine(m: dict[str, Any]) -> str:
    cpu = f"{m['cpus']} CPUs" if m.get("cpus") else "CPUs not recorded"
    if m.get("cpu_model"):
        cpu += f" ({m['cpu_model']})"
    gpus = [g["name"] for g in m.get("gpus") or []]
    if gpus:
        return f"{len(gpus)} x {gpus[0]}" + ("" if m.get("cpus") is None else f", {cpu}")
    return cpu + ", no GPU" if "gpus" in m or "gpu" in m else cpu


def source_line(path: str, artifact: dict[str, Any]) -> str:
    p = provenance_of(artifact)
    if p.get("commit"):
        code = f"commit {p['commit'][:7]}, {p.get('tree', 'unknown')} tree"
    elif p.get("added_in_commit"):
        code = f"no commit recorded by the run (the file was added in {p['added_in_commit'][:7]})"
    else:
        code = f"commit unknown ({p.get('git_error', 'not recorded')})"
    date = str(p["date"])[:10] if p.get("date") else "date not recorded"
    command = f"; `{p['command']}`" if p.get("command") else ""
    return f"Artifact `{path}`: {code}, {date}, {_machine(p.get('machine') or {})}{_load(p)}{command}."


def _load(p: dict[str, Any]) -> str:
    """The 1-minute load average at the start and end of the run, where recorded: on a shared
    machine it says how much else competed for the cores."""
    m = p.get("machine") or {}
    start, end = m.get("load_avg") or m.get("load_avg_start"), m.get("load_avg_end")
    if not start:
        return ""
    return f", load average {start[0]:.1f}" + (f" to {end[0]:.1f}" if end else "")


# ------------------------------------------------------------------------------------- renderers
def ratios_table(ratios: dict[str, float]) -> str:
    rows = ["| ratio | value |", "|---|---:|"]
    rows += [f"| {k} | {v:,.0f} |" if abs(v) >= 100 else f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    return "\n".join(rows)


def _of_first(module: str, name: str) -> Renderer:
    """A renderer that is `module.name` of the first artifact, imported when a table needs it (a
    benchmark module may import torch)."""
    return lambda arts, _: getattr(importlib.import_module(module), name)(arts[0])


def _bench_data_padding(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    from seller_dist.bench.data import padding_table

    return padding_table(arts)


def _bench_train_ratios(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """Per-sample cost ratios of one run and its stream against what training consumes."""
    result = arts[0]
    ratios = dict(result["ratios"])
    stream = result.get("stream") or {}
    if stream:
        ratios["stream_records_per_s_per_rank"] = stream["records_per_s"]
        ratios["stream_over_training"] = stream["stream_over_training"]
    ratios["cpu_peak_tflops_per_worker"] = result["settings"]["peak_tflops_per_worker"]
    return ratios_table(ratios)


def _bench_train_comm(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """Collective calls per rank by kind, over the whole run (setup, warm-up, measured and cool-down
    steps), and that total over the steps run: an upper bound on the calls of one step."""
    result = arts[0]
    s = result["settings"]
    steps = s["warmup_steps"] + s["measured_steps"] + 1
    kinds = sorted({k for r in result["results"] for k in r["comm_total_by_kind"]})
    rows = [
        "| mode | workers | " + " | ".join(kinds) + f" | all / {steps} steps run |",
        "|---|---:|" + "---:|" * (len(kinds) + 1),
    ]
    for r in result["results"]:
        calls = {k: r["comm_total_by_kind"].get(k, {}).get("calls", 0) for k in kinds}
        if not any(calls.values()):
            continue
        rows.append(
            f"| {r['mode']} | {r['workers']} | "
            + " | ".join(f"{calls[k]:.0f}" for k in kinds)
            + f" | {sum(calls.values()) / steps:.0f} |"
        )
    return "\n".join(rows)


def _bench_train_setting(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """The same modes in runs that differ in one config key (`setting=section.key`)."""
    key = opts["setting"]
    rows = [
        f"| {key} | mode | workers | LLM tokens/sample | samples/s | step ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for art in arts:
        value: Any = art["config"]
        for part in key.split("."):
            value = value[part]
        for r in art["results"]:
            rows.append(
                f"| {value} | {r['mode']} | {r['workers']} | {r['llm_tokens'] / r['samples']:.1f} | "
                f"{r['samples_per_s']:.1f} | {r['step_time_s'] * 1e3:.1f} |"
            )
    return "\n".join(rows)


def _bench_eval(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    from seller_dist.bench.eval import variants_table

    return variants_table(arts[0]) + "\n\n" + ratios_table(arts[0]["ratios"])


def _gpu_decode(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    from seller_dist.bench.eval import decode_table

    return decode_table(arts[0]["rows"])


def _experiment(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """An experiment's results.json as its results.md shows it, one heading level down and without
    its title (the doc's own heading names the experiment)."""
    from seller_dist.experiment import markdown

    lines = markdown(arts[0]).rstrip("\n").split("\n")
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join("#" + line if line.startswith("## ") else line for line in lines)
    return text.strip("\n")


def _experiment_steps(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """Grids that differ only in their step budget (same data, recipe and test examples), a row per
    system and budget: what more training changes, metric by metric. `seed=N`: that seed's runs;
    `seed=mean`: the mean ± std over the seeds every grid ran (the sample std, as results.md's)."""
    from seller_dist.config.experiment import HEADLINE_METRICS
    from seller_dist.experiment import fmt_stat, fmt_value, summarize

    systems = [s for s in arts[-1]["systems"] if all(s in a["systems"] for a in arts)]
    if opts.get("seed", "0") == "mean":
        seeds = sorted(set.intersection(*({r["seed"] for r in a["runs"]} for a in arts)))
        lines = [
            f"Mean ± std over seeds {', '.join(map(str, seeds))}.",
            "",
            "| system | steps | " + " | ".join(HEADLINE_METRICS) + " |",
            "|---|---:|" + "---:|" * len(HEADLINE_METRICS),
        ]
        for system in systems:
            for art in arts:
                runs = [r for r in art["runs"] if r["system"] == system and r["seed"] in seeds]
                stats = summarize(runs, [system])[system]
                cells = " | ".join(fmt_stat(stats.get(m)) for m in HEADLINE_METRICS)
                lines.append(f"| {system} | {runs[0]['step']} | {cells} |")
        return "\n".join(lines)
    seed = int(opts.get("seed", "0"))
    lines = [
        "| system | steps | " + " | ".join(HEADLINE_METRICS) + " | train s |",
        "|---|---:|" + "---:|" * (len(HEADLINE_METRICS) + 1),
    ]
    for system in systems:
        for art in arts:
            run = next(r for r in art["runs"] if r["system"] == system and r["seed"] == seed)
            cells = " | ".join(fmt_value(run["metrics"].get(m)) for m in HEADLINE_METRICS)
            lines.append(f"| {system} | {run['step']} | {cells} | {run['train_seconds']:.0f} |")
    return "\n".join(lines)


def _ci(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """Fresh-clone `.ci/run` times (install, lint and the whole suite), one row per run."""
    lines = [
        "| commit | passed | failed | install + lint s | tests s | total s | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a in arts:
        lines.append(
            f"| {a['provenance']['commit'][:7]} | {a['passed']} | {a['failed']} | {a['install_and_lint_s']:.0f} "
            f"| {a['pytest_s']:.0f} | {a['total_s']:.0f} | {a['total_s'] / 60:.1f} |"
        )
    return "\n".join(lines)


SIDE_BY_SIDE_METRICS = ("bleu1", "bleu4", "rouge1", "rougeL", "bertscore_f1")


def _text_side_by_side(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """Systems scored by the same text metrics on the same examples (tools/xrec_released_subset.py):
    per system the mean over its seeds' scores ± their sample std; a system with one run, its score."""
    from seller_dist.experiment import fmt_stat

    art = arts[0]
    by_system: dict[str, list[dict[str, Any]]] = {}
    for run in art["runs"]:
        by_system.setdefault(run["system"], []).append(run["text"])
    metrics = [m for m in SIDE_BY_SIDE_METRICS if any(m in t for runs in by_system.values() for t in runs)]
    rows = [f"| system | runs | {' | '.join(metrics)} |", "|---|---:|" + "---|" * len(metrics)]
    for system, runs in by_system.items():
        cells = []
        for m in metrics:
            values = [t[m]["mean"] for t in runs if m in t]
            std = statistics.stdev(values) if len(values) > 1 else None
            cells.append(fmt_stat({"mean": statistics.fmean(values), "std": std}) if values else "—")
        rows.append(f"| {system} | {len(runs)} | {' | '.join(cells)} |")
    return f"{art['matched']} examples, every system on the same ones.\n\n" + "\n".join(rows)


def _runs_side_by_side(art: dict[str, Any], opts: dict[str, str], default: list[str] | None) -> str:
    """An artifact's `runs` ({label, report}) side by side, the rows named in `metrics=`
    (comma-separated; else `default`, None = every metric), each cell mean ± std over the test examples."""
    from seller_dist.eval.report import reports_table

    metrics = opts["metrics"].split(",") if "metrics" in opts else default
    runs = art["runs"]
    return reports_table([r["report"] for r in runs], [r["label"] for r in runs], metrics)


def _demo(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """`seller-dist demo`'s side-by-side table from its demo.json (default rows: HEADLINE_METRICS)."""
    from seller_dist.config.experiment import HEADLINE_METRICS

    art = arts[0]
    took = f"; the whole demo took {art['wall_seconds'] / 60:.1f} minutes" if "wall_seconds" in art else ""
    head = (
        f"LLM `{art['llm']}`, {art['train_steps']} training steps per system, "
        f"{art['eval_limit'] or 'all'} test examples{took}.\n\n"
    )
    return head + _runs_side_by_side(art, opts, list(HEADLINE_METRICS))


def _oracles(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """`seller-dist oracles --artifact`'s reports side by side (default rows: every metric)."""
    art = arts[0]
    n = art["runs"][0]["report"].get("num_examples")
    head = (
        f"{n} '{art['split']}' examples of the synthetic source's dataset "
        f"(manifest sha256 {art['dataset_manifest_sha256'][:12]}), draws seeded {art['seed']}.\n\n"
    )
    return head + _runs_side_by_side(art, opts, None)


def _learning(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """tests/learning_seller_vs_bag.py's artifact: a row per seed, each cell SELLER / `bag`, then the
    references' own MRR and exact acceptance (the same for both systems)."""
    cols = [
        ("attention top = cited", "attention_top_is_cited"),
        ("cites_reference_event", "cites_reference_event"),
        ("MRR", "mrr"),
        ("HR@10", "hr@10"),
        ("cites_history", "cites_history"),
        ("exact acceptance", "exact_acceptance"),
    ]
    lines = ["| seed | " + " | ".join(c for c, _ in cols) + " |", "|---:|" + "---|" * len(cols)]
    for r in arts[0]["runs"]:
        cells = " | ".join(f"{r['seller'][k]:.3f} / {r['bag'][k]:.3f}" for _, k in cols)
        lines.append(f"| {r['seed']} | {cells} |")
    first = arts[0]["runs"][0]
    lines += [
        "",
        f"(The references: MRR {first['reference_mrr']:.3f}, exact acceptance "
        f"{first['reference_exact_acceptance']:.3f}.)",
    ]
    return "\n".join(lines)


def _soft_prompt_probe(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """tools/soft_prompt_probe.py's artifact: per checkpoint and hidden soft positions, how often the
    explanation names a history item, the reference's event, the pointed event and the pointer's
    spelling; then each checkpoint's pointer and soft-vector norms."""
    cols = [
        ("names a history item", "cites_history"),
        ("names the reference's event", "cites_reference_event"),
        ("names the pointed event", "names_pointed_event"),
        ("writes what the pointer spells", "writes_pointer_prefix"),
    ]
    lines = ["| checkpoint | hidden from the LLM | " + " | ".join(c for c, _ in cols) + " |"]
    lines.append("|---|---|" + "---:|" * len(cols))
    for name, run in arts[0]["runs"].items():
        for hide, v in run["variants"].items():
            what = hide.removeprefix("hide_").replace("none", "nothing (as evaluated)")
            lines.append(f"| {name} | {what} | " + " | ".join(f"{v[k]:.2f}" for _, k in cols) + " |")
    lines += ["", "| checkpoint | pointer positions | pointer on the reference's event | pointer cuts the title | "
              "norm: adapter vectors | norm: pointer vectors | norm: prompt text tokens |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, run in arts[0]["runs"].items():
        n = run["norm_mean"]
        lines.append(
            f"| {name} | {run['model']['pointer_tokens']} | {run['pointer_on_reference_event']:.2f} | "
            f"{run['pointer_cuts_title']:.2f} | {n['adapter']:.2f} | {n['pointer']:.2f} | {n['text_tokens']:.2f} |"
        )
    return "\n".join(lines)


TEXT_HEADER = "| A vs B | text metric | pairs | A | B | A better | B better | p | A - B, 95 % interval |"
TEXT_RULE = "|---|---|---:|---:|---:|---:|---:|---:|---|"


def _text_format(metric: str) -> str:
    return ".3f" if metric == "bertscore_f1" else ".2f"


def _text_row(c: dict[str, Any], m: str, r: dict[str, Any]) -> str:
    """One paired text metric of a comparison: means, wins (none for corpus BLEU), p, interval."""
    f, (lo, hi) = _text_format(m), r["diff_ci95"]
    wins = ("—", "—") if r["a_better"] is None else (r["a_better"], r["b_better"])
    return (
        f"| {c['a']} vs {c['b']} | {m} | {r['pairs']} | {r['mean_a']:{f}} | {r['mean_b']:{f}} | "
        f"{wins[0]} | {wins[1]} | {r['p']:.3f} | [{lo:+{f}}, {hi:+{f}}] |"
    )


def _paired_compare(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """tools/paired_compare.py's artifact: per pair of systems and grounding metric, the paired
    outcomes over every seed's test examples, the exact sign test and the bootstrap interval; then
    per system whether the most attended event and the explanation's citation agree; with --text,
    per pair of systems and text metric, the paired difference over the same examples, and over those
    where neither explanation names a history item."""
    lines = [
        "| A vs B | metric | pairs | rate A | rate B | A only | B only | sign test p | A - B, 95 % interval |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in arts[0]["comparisons"]:
        for m, r in c["pooled"].items():
            if not r["pairs"]:  # the dataset does not define it (no reference event: real text)
                continue
            lo, hi = r["diff_ci95"]
            lines.append(
                f"| {c['a']} vs {c['b']} | {m} | {r['pairs']} | {r['rate_a']:.3f} | {r['rate_b']:.3f} | "
                f"{r['a_only']} | {r['b_only']} | {r['sign_test_p']:.3f} | [{lo:+.3f}, {hi:+.3f}] |"
            )
    attention = [
        "",
        "| system | attention on the reference's event: names it | names it not | attention elsewhere: names it | "
        "names it not | names it when attention is on it |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    seen: set[str] = set()
    for c in arts[0]["comparisons"]:
        for system, n in c["attention_vs_citing"].items():
            if system in seen or not any(n.values()):  # no attention or no reference event
                continue
            seen.add(system)
            on = n["attention_on_cites"] + n["attention_on_not"]
            attention.append(
                f"| {system} | {n['attention_on_cites']} | {n['attention_on_not']} | {n['attention_off_cites']} | "
                f"{n['attention_off_not']} | {n['attention_on_cites'] / on if on else 0:.2f} |"
            )
    if seen:
        lines += attention
    seeds = sorted({s for c in arts[0]["comparisons"] for s in c["seeds"]})
    text = [c for c in arts[0]["comparisons"] if "text" in c]
    if text:
        lines += ["", f"{TEXT_HEADER} A - B per seed |", f"{TEXT_RULE}---|"]
        for c in text:
            for m, r in c["text"]["pooled"].items():
                f = _text_format(m)
                per = " / ".join(
                    f"{v[m]['mean_a'] - v[m]['mean_b']:+{f}}"
                    for _, v in sorted(c["text"]["per_seed"].items())
                )
                lines.append(f"{_text_row(c, m, r)} {per} |")
        uncited = [c for c in text if "neither_cites_history" in c["text"]]
        if uncited:
            lines += [
                "",
                "Only the pairs where neither explanation names a history item:",
                "",
                TEXT_HEADER,
                TEXT_RULE,
            ]
            lines += [
                _text_row(c, m, r) for c in uncited for m, r in c["text"]["neither_cites_history"].items()
            ]
        same = [c for c in text if "same_text" in c["text"]]
        if same:
            lines += [
                "",
                "| A vs B | seed | pairs | A's explanation is B's | opens with B's first 8 words |",
                "|---|---:|---:|---:|---:|",
            ]
            for c in same:
                for seed, n in sorted(c["text"]["same_text"].items()):
                    lines.append(
                        f"| {c['a']} vs {c['b']} | {seed} | {n['pairs']} | {n['identical']} | {n['same_opening']} |"
                    )
    lines += ["", f"Pooled over seeds {', '.join(map(str, seeds))}: one pair per test example and seed."]
    if text:
        lines += [
            "Text metrics: BLEU-4 is the corpus BLEU of the pooled pairs with Koehn's paired bootstrap p; "
            "ROUGE-L and BERTScore-F1 are per-example means with the sign test on the examples where they differ."
        ]
    return "\n".join(lines)


def _scaling_train_check(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """The cost model's terms on a `seller-dist bench train` run: per mode the FLOPs per token by
    `flops_per_token` (the bench's 4N + 6N accounting, no attention term) and the efficiency it
    reached against the measured peak; per multi-worker mode the all-gathered bytes the model gives
    against the CommClock's; and, for `mode=` (default every mode), each collective's calls and waits."""
    from tools.scaling_model import ClusterSpec, LLMSpec, Workload, flops_per_token, step_cost

    art = arts[0]
    s = art["settings"]
    peak = s["peak_tflops_per_worker"]
    steps = s["warmup_steps"] + s["measured_steps"] + 1  # the CommClock counts setup and every step run
    lines = [
        f"Peak per worker {peak:.3f} TFLOP/s ({s['peak_source']}).",
        "",
        "| mode | workers | N_f | N_t | LLM tokens/sample | F MFLOP/token | tokens/s/worker | TFLOP/s/worker "
        "| efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in art["results"]:
        per_sample = r["llm_tokens"] / r["samples"]
        w = Workload(seq_len=per_sample, trainable_params=r["trainable_params"], attention=False)
        f = flops_per_token(LLMSpec(r["mode"], r["frozen_params"], 0, 0), w)
        tflops = r["tokens_per_s_per_worker"] * f / 1e12
        lines.append(
            f"| {r['mode']} | {r['workers']} | {r['frozen_params']:,} | {r['trainable_params']:,} | {per_sample:.1f} | "
            f"{f / 1e6:.3f} | {r['tokens_per_s_per_worker']:,.0f} | {tflops:.4f} | {tflops / peak:.3f} |"
        )
    multi = [r for r in art["results"] if r["workers"] > 1 and r["comm_total_by_kind"]]
    lines += [
        "",
        f"| mode | workers | model: all-gathered MB per step | measured: all-gather MB / {steps} steps run "
        "| measured / model | collectives per step run | all-gather wait ms per step run "
        "| exposed comm ms per step | step ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in multi:
        g = r["workers"]
        # the frozen LLM in fp32 gathered for the forward and the backward, the trainables likewise;
        # the model counts the (G-1)/G received, the CommClock the whole gathered tensor
        w = Workload(param_bytes=4, trainable_params=r["trainable_params"], grad_accum=1)
        cost = step_cost(LLMSpec(r["mode"], r["frozen_params"], 0, 0), w, ClusterSpec(gpus=g), "zero3")
        model_mb = (cost["gather_bytes"] + cost["grad_bytes"]) * g / (g - 1) / 1e6
        comm = r["comm_total_by_kind"]
        gathers = comm.get("all_gather", {"bytes": 0, "seconds": 0.0})
        measured_mb = gathers["bytes"] / steps / 1e6
        calls = sum(v["calls"] for v in comm.values())
        lines.append(
            f"| {r['mode']} | {g} | {model_mb:.2f} | {measured_mb:.2f} | {measured_mb / model_mb:.2f} | "
            f"{calls / steps:.0f} | {gathers['seconds'] / steps * 1e3:.1f} | "
            f"{r['split_s']['communication'] * 1e3:.1f} | {r['step_time_s'] * 1e3:.1f} |"
        )
    lines += [
        "",
        "| mode | workers | collective | calls | waited s | MB | MB/s | ms per call |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in multi:
        if opts.get("mode", r["mode"]) != r["mode"]:
            continue
        for kind, v in sorted(r["comm_total_by_kind"].items()):
            if not v["calls"]:
                continue
            rate = f"{v['bytes'] / v['seconds'] / 1e6:.1f}" if v["seconds"] and v["bytes"] else ""
            lines.append(
                f"| {r['mode']} | {r['workers']} | {kind} | {v['calls']:.0f} | {v['seconds']:.3f} | "
                f"{v['bytes'] / 1e6:.2f} | {rate} | {v['seconds'] / v['calls'] * 1e3:.2f} |"
            )
    return "\n".join(lines)


def _scaling_gpu_check(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """GPU benchmark runs through the cost model: FLOPs per token by `flops_per_token` (attention
    included), the TFLOP/s and efficiency each run reached, and that efficiency over the one the
    predictions assume (the factor a compute-bound prediction row would move by). Artifacts are
    numbered in the order of their source lines."""
    from tools.scaling_model import ClusterSpec, LLMSpec, Workload, flops_per_token

    assumed = ClusterSpec(gpus=1).efficiency
    heads, rows = [], []
    for i, art in enumerate(arts, 1):
        llm = LLMSpec(art["device"], art["frozen_params"], art["llm"]["layers"], art["llm"]["hidden"])
        peak = art["peak_tflops"]
        heads.append(
            f"Artifact {i}: {llm.name}, peak {peak:.0f} TFLOP/s; frozen LLM N_f = {llm.params:,}, "
            f"L = {llm.layers}, H = {llm.hidden}."
        )
        for r in art["runs"]:
            f = flops_per_token(llm, Workload(seq_len=r["seq_len"], trainable_params=r["trainable_params"]))
            tflops = r["tokens_per_s"] * f / 1e12
            rows.append(
                f"| {i} | {r['variant']} | {r['micro_batch']} | {r['seq_len']} | {r['trainable_params']:,} | "
                f"{f / 1e9:.2f} | {r['tokens_per_s']:,.0f} | {tflops:.0f} | {tflops / peak:.3f} | "
                f"{tflops / peak / assumed:.2f} |"
            )
    table = [
        "| artifact | variant | micro-batch | s | N_t | F GFLOP/token | tokens/s | TFLOP/s | efficiency "
        f"| over the assumed {assumed} |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join([*heads, "", *table, *rows])


def _prep_runs(art: dict[str, Any], opts: dict[str, str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The artifact's successful runs per (engine, format), restricted to `engine=` and `format=` when
    given, each list the two sizes of `sizes=A,B` (default: the two largest that ran)."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in art["results"]:
        wanted = (
            opts.get("engine", r["engine"]) == r["engine"] and opts.get("format", r["format"]) == r["format"]
        )
        if r["exit_code"] == 0 and wanted:
            by.setdefault((r["engine"], r["format"]), []).append(r)
    sizes = [int(x) for x in opts["sizes"].split(",")] if "sizes" in opts else None
    out = {}
    for key, runs in by.items():
        runs = sorted(runs, key=lambda r: r["events"])
        picked = [r for r in runs if r["events"] in sizes] if sizes else runs[-2:]
        if len(picked) == 2:
            out[key] = picked
    return out


def _prep_fit(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """`wall = T0 + E * k` through two sizes of each engine and format (`fit_wall`; `sizes=A,B`,
    default the two largest), k times the CPUs the runs had = CPU seconds per event, and the records
    written per event; a row per artifact (named by its commit), engine and format."""
    from tools.scaling_model import fit_wall

    lines = [
        "| commit | engine | format | CPUs | events | wall s | k us/event | T0 s | CPU us/event (k x CPUs) "
        "| records/event |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for art in arts:
        commit = (provenance_of(art).get("commit") or "unknown")[:7]
        for (engine, fmt), (a, b) in _prep_runs(art, opts).items():
            t0, k = fit_wall([(a["events"], a["wall_s"]), (b["events"], b["wall_s"])])
            lines.append(
                f"| {commit} | {engine} | {fmt} | {b['cpus']} | {a['events']:,} / {b['events']:,} | "
                f"{a['wall_s']:.1f} / {b['wall_s']:.1f} | {k * 1e6:.1f} | {t0:.1f} | {k * b['cpus'] * 1e6:.1f} | "
                f"{b['examples'] / b['events']:.3f} |"
            )
    return "\n".join(lines)


def _prep_setting(art: dict[str, Any], key: str) -> Any:
    """A PrepConfig field as the run set it (`--set key=value`), else its default."""
    from seller_dist.config import PrepConfig

    for item in art["settings"].get("prep_set") or []:
        name, _, value = item.partition("=")
        if name == key:
            return value
    return getattr(PrepConfig(), key)


def _prep_memory(arts: list[dict[str, Any]], _: dict[str, str]) -> str:
    """Every engine=ray run's memory beside what bounds it: the cut's partitions P, the shuffle map
    tasks M = E / partition_max_events and the M x P shuffle shards the driver indexes."""
    lines = [
        "| commit | partition_max_events | ray_shuffle | events | cut partitions P | M x P | driver peak RSS MiB "
        "| largest worker VmHWM MiB | largest worker private MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for art in arts:
        commit = (provenance_of(art).get("commit") or "unknown")[:7]
        pme = int(_prep_setting(art, "partition_max_events"))
        shuffle = _prep_setting(art, "ray_shuffle")
        for r in art["results"]:
            if r["engine"] != "ray":
                continue
            p = r.get("cut_partitions")
            shards = f"{-(-r['events'] // pme) * p:,}" if p else ""
            lines.append(
                f"| {commit} | {pme:,} | {shuffle} | {r['events']:,} | {_or_blank(p)} | {shards} | "
                f"{r['driver_peak_rss_mib']} | {_or_blank(r['ray_worker_peak_rss_mib'])} | "
                f"{_or_blank(r.get('ray_worker_private_mib'))} |"
            )
    return "\n".join(lines)


def _or_blank(v: Any) -> str:
    return "" if v is None else str(v)


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _prep_1b(arts: list[dict[str, Any]], opts: dict[str, str]) -> str:
    """`prep_cost` for `events=` (default 1e9) on `nodes=` (default 1,4,16,64), its CPU term and
    records per event from the fit of one engine and format of the artifact (`engine=` default ray,
    `format=` default csv, `sizes=`), the rest the model's stated assumptions (PrepCluster)."""
    from tools.scaling_model import PrepCluster, fit_wall, prep_cost

    events = int(float(opts.get("events", "1e9")))
    fit_opts = {"engine": "ray", "format": "csv", **opts}
    fits = _prep_runs(arts[0], fit_opts)
    if not fits:
        raise ValueError(
            f"prep-1b: no two {fit_opts['engine']}/{fit_opts['format']} runs to fit in the artifact"
        )
    (engine, fmt), (a, b) = next(iter(fits.items()))
    _, k = fit_wall([(a["events"], a["wall_s"]), (b["events"], b["wall_s"])])
    cpu_s, records = k * b["cpus"], b["examples"] / b["events"]
    base = PrepCluster(nodes=1, cpu_s_per_event=cpu_s, records_per_event=records)
    lines = [
        f"From the fit ({engine}, {fmt}, {a['events']:,} and {b['events']:,} events): {cpu_s * 1e6:.1f} us of CPU "
        f"and {records:.3f} records per event. Assumed: {base.cpus_per_node} CPUs per node, partition_max_events "
        f"{base.partition_max_events:,}, {base.parsed_bytes_per_event:.0f} B per parsed event, "
        f"{base.bytes_per_record:,.0f} B per output record, {base.upload_gbs_per_node:g} GB/s of upload per node.",
        "",
        f"| nodes | CPUs | cut tasks P | events per cut task | CPU term | object store + local-disk shuffle per node "
        f"| driver's shuffle index (M x P x {base.shuffle_index_bytes} B) | output upload | wall, the terms added |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for nodes in (int(n) for n in opts.get("nodes", "1,4,16,64").split(",")):
        c = prep_cost(events, PrepCluster(nodes=nodes, cpu_s_per_event=cpu_s, records_per_event=records))
        per_node = f"{c['parsed_bytes_per_node'] / 1e9:.3g} GB"
        lines.append(
            f"| {nodes} | {c['cpus']:,} | {c['cut_tasks']:,} | {c['events_per_cut_task']:,.0f} | "
            f"{_duration(c['cpu_s'])} | {per_node} + {per_node} | "
            f"{c['driver_shuffle_index_bytes'] / 1e9:.1f} GB | {_duration(c['upload_s'])} | {_duration(c['wall_s'])} |"
        )
    return "\n".join(lines)


RENDERERS: dict[str, Renderer] = {
    "demo": _demo,
    "learning": _learning,
    "oracles": _oracles,
    "bench-data": _of_first("seller_dist.bench.data", "stream_table"),
    "bench-data-padding": _bench_data_padding,
    "bench-train": _of_first("seller_dist.bench.train", "table"),
    "bench-train-ratios": _bench_train_ratios,
    "bench-train-comm": _bench_train_comm,
    "bench-train-setting": _bench_train_setting,
    "bench-prep": _of_first("seller_dist.bench.prep", "table"),
    "prep-fit": _prep_fit,
    "prep-memory": _prep_memory,
    "prep-1b": _prep_1b,
    "bench-eval": _bench_eval,
    "gpu-train": _of_first("seller_dist.bench.gpu", "train_table"),
    "gpu-decode": _gpu_decode,
    "scaling-train-check": _scaling_train_check,
    "scaling-gpu-check": _scaling_gpu_check,
    "ci": _ci,
    "experiment": _experiment,
    "experiment_steps": _experiment_steps,
    "text-side-by-side": _text_side_by_side,
    "soft-prompt-probe": _soft_prompt_probe,
    "paired-compare": _paired_compare,
}


def _checkpoint_parts() -> str:
    from seller_dist.train.checkpoint_state import markdown_table

    return markdown_table()


# kind -> (the table, from code alone; the line saying which code): tables of what the code IS, not
# of a measurement, so they name no artifact
CODE_TABLES: dict[str, tuple[Callable[[], str], str]] = {
    "checkpoint-parts": (
        _checkpoint_parts,
        "Generated from `PARTS` in `seller_dist/train/checkpoint_state.py`.",
    ),
    "scaling": (
        lambda: scaling.markdown(scaling.predict()),
        "Generated from the cost model, `predict()` in `tools/scaling_model.py`.",
    ),
}


# ------------------------------------------------------------------------------------- the blocks
def render(spec: str, root: Path = REPO) -> str:
    """The body of the block `<!-- table: SPEC -->`: the table, then one source line per artifact
    (a table of the code itself, CODE_TABLES: the line naming that code)."""
    kind, *rest = spec.split()
    if kind in CODE_TABLES:
        table, source = CODE_TABLES[kind]
        return f"{table()}\n\n{source}\n"
    if kind not in RENDERERS:
        known = ", ".join([*RENDERERS, *CODE_TABLES])
        raise ValueError(f"unknown table kind {kind!r}; known: {known}")
    opts = dict(t.split("=", 1) for t in rest if "=" in t)
    paths = [t for t in rest if "=" not in t]
    if not paths:
        raise ValueError(f"table {kind}: no artifact named")
    arts = [json.loads((root / p).read_text()) for p in paths]
    sources = "\n".join(source_line(p, a) for p, a in zip(paths, arts, strict=True))
    return f"{RENDERERS[kind](arts, opts)}\n\n{sources}\n"


def regenerate(text: str, root: Path = REPO) -> str:
    return BLOCK.sub(lambda m: f"<!-- table: {m['spec']} -->\n{render(m['spec'], root)}<!-- /table -->", text)


def markdown_files(root: Path = REPO) -> list[Path]:
    return sorted(p for p in root.rglob("*.md") if not SKIP_DIRS.intersection(p.relative_to(root).parts))


def stale_blocks(root: Path = REPO) -> list[str]:
    """`file: spec` of every generated block whose text differs from what its artifacts give."""
    out = []
    for path in markdown_files(root):
        for m in BLOCK.finditer(path.read_text(encoding="utf-8")):
            if m["body"] != render(m["spec"], root):
                out.append(f"{path.relative_to(root)}: {m['spec']}")
    return out


def write_all(root: Path = REPO) -> list[Path]:
    """Rewrite every generated block from its artifacts; the files that changed."""
    changed = []
    for path in markdown_files(root):
        text = path.read_text(encoding="utf-8")
        new = regenerate(text, root)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.doc_tables [--check]`: rewrite every generated block; with --check rewrite
    nothing and exit 1 when a block is stale."""
    parser = argparse.ArgumentParser(prog="python -m tools.doc_tables", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a block is stale")
    if parser.parse_args(argv).check:
        stale = stale_blocks()
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all():
        print(f"rewrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
