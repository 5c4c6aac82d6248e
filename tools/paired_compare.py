"""Does system A cite differently from system B beyond chance? A grid's mean ± std over 3 seeds cannot
say: each seed scores about 40 examples, so one example moves a rate by 0.025. This pairs the two
systems' explanations of the same test example under the same seed (the grid's
cells/<system>/seed-<S>/eval/generations.jsonl), scores each with the eval's own grounding code on
the same records, and gives per metric the discordant pairs, the exact two-sided sign test on them
(McNemar's exact test) and a paired bootstrap 95 % interval of the difference in rate. With --text it
also pairs the text metrics against the same reference (docs/evaluation.md, "Text quality"): ROUGE-L
and BERTScore-F1 per example (wins, the sign test, the interval of the mean difference) and corpus
BLEU-4 by Koehn's paired bootstrap (the same resampled examples for both systems), over every pair
and again over the pairs where neither explanation names a history item. A cell the grid
reused from another seed (an untrained system: result.json's `reused_from`) pairs with every seed.
It exists to read a measured gap (docs/results.md), not as a product feature.

    python -m tools.paired_compare --experiment outputs/experiments/X --a SYS_A --b SYS_B --out X.json
    (--data DATA when the generations were made on a dataset other than the grid's <experiment>/data;
    --also FOLDER, repeatable, for a system whose cells/ are in another folder, e.g. re-scored checkpoints;
    --text to pair BLEU-4, ROUGE-L and BERTScore-F1 too)
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seller_dist.data.schema import ExampleRecord
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import plan_batches, read_batches
from seller_dist.eval.generations import Generation, read_generations
from seller_dist.eval.grounding import cited_item_ids, reference_event
from seller_dist.version import provenance

METRICS = ("cites_history", "cites_reference_event", "attention_top_is_cited")
TEXT_METRICS = ("bleu4", "rougeL", "bertscore_f1")
TEXT_DRAWS = 2000
ATTENTION_CELLS = ("attention_on_cites", "attention_on_not", "attention_off_cites", "attention_off_not")


def example_flags(gen: Generation, record: ExampleRecord) -> dict[str, float]:
    """One explanation's 0/1 outcome per metric, as seller_dist/eval/grounding.py counts them: a
    metric the example does not define (no reference event, no attention) is left out."""
    ids = cited_item_ids(gen.generated, record.history)
    out = {"cites_history": float(bool(ids))}
    ref, top = reference_event(record), gen.top_event()
    if ref is not None:
        out["cites_reference_event"] = float(ref[0] in ids)
        if top is not None:
            out["attention_top_is_cited"] = float(top.offset == ref[1])
    return out


def sign_test(a_only: int, b_only: int) -> float:
    """Exact two-sided p of the discordant pairs under 'A and B equally likely' (McNemar's exact)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_interval(diffs: Sequence[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean paired difference, resampling the pairs."""
    rng, n = random.Random(seed), len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def paired(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Counts, rates, the sign test and the bootstrap interval of (A, B) outcome pairs."""
    a_only = sum(1 for a, b in pairs if a > b)
    b_only = sum(1 for a, b in pairs if b > a)
    n = len(pairs)
    lo, hi = bootstrap_interval([a - b for a, b in pairs]) if n else (0.0, 0.0)
    return {
        "pairs": n,
        "both": sum(1 for a, b in pairs if a and b),
        "a_only": a_only,
        "b_only": b_only,
        "neither": sum(1 for a, b in pairs if not a and not b),
        "rate_a": sum(a for a, _ in pairs) / n if n else 0.0,
        "rate_b": sum(b for _, b in pairs) / n if n else 0.0,
        "sign_test_p": sign_test(a_only, b_only),
        "diff_ci95": [lo, hi],
    }


def cells_of(system: str, folders: Sequence[str]) -> Path:
    """<folder>/cells/<system> of the first folder that has it."""
    for f in folders:
        if (Path(f) / "cells" / system).is_dir():
            return Path(f) / "cells" / system
    raise SystemExit(f"no cells/{system} in {', '.join(folders)}")


def generations_of(cells: Path, seed: int) -> Path | None:
    """cells/<system>/seed-<S>'s generations file, or the one of the seed its result.json says the
    grid reused (an untrained system is evaluated once); None when the seed has neither."""
    own = cells / f"seed-{seed}" / "eval" / "generations.jsonl"
    if own.exists():
        return own
    result = cells / f"seed-{seed}" / "result.json"
    reused = json.loads(result.read_text()).get("reused_from") if result.exists() else None
    if reused and (cells / reused / "eval" / "generations.jsonl").exists():
        return cells / reused / "eval" / "generations.jsonl"
    return None


def paired_scores(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Per-example scores of A and B on the same examples: means, wins, the sign test on the examples
    that differ and a paired bootstrap 95 % interval of the mean difference."""
    diff = a - b
    a_better, b_better = int((diff > 0).sum()), int((diff < 0).sum())
    idx = np.random.default_rng(0).integers(0, len(diff), size=(TEXT_DRAWS, len(diff)))
    means = np.sort(diff[idx].mean(axis=1))
    return {
        "pairs": len(diff),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "a_better": a_better,
        "b_better": b_better,
        "p": sign_test(a_better, b_better),
        "diff_ci95": [float(means[int(0.025 * TEXT_DRAWS)]), float(means[int(0.975 * TEXT_DRAWS) - 1])],
    }


def paired_corpus_bleu(stats_a: np.ndarray, stats_b: np.ndarray) -> dict[str, Any]:
    """Corpus BLEU-4 of A and B from per-example statistics and Koehn's paired bootstrap: each draw
    resamples the examples once and rescores both corpora on it; p is two-sided (the share of draws
    on the other side of zero, doubled)."""
    from seller_dist.eval.text_metrics import _bleu_from_stats

    n = len(stats_a)
    rng = np.random.default_rng(0)
    diffs = np.empty(TEXT_DRAWS)
    for d in range(TEXT_DRAWS):
        w = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        diffs[d] = _bleu_from_stats(w @ stats_a, 4) - _bleu_from_stats(w @ stats_b, 4)
    diffs.sort()
    return {
        "pairs": n,
        "mean_a": _bleu_from_stats(stats_a.sum(0), 4),
        "mean_b": _bleu_from_stats(stats_b.sum(0), 4),
        "a_better": None,
        "b_better": None,
        "p": min(1.0, 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean()))),
        "diff_ci95": [float(diffs[int(0.025 * TEXT_DRAWS)]), float(diffs[int(0.975 * TEXT_DRAWS) - 1])],
    }


def text_scores(generated: Sequence[str], references: Sequence[str], encoder: Any) -> dict[str, np.ndarray]:
    """Per example, with the eval job's own code and default text options: BLEU-4 statistics (n, 10),
    ROUGE-L (0-100) and BERTScore-F1."""
    from seller_dist.config import EvalConfig, load_config
    from seller_dist.eval.text_metrics import _bleu_stats, bertscore, rouge_scores, tokenize

    t = load_config(EvalConfig, None, ["data=unused"]).text
    return {
        "bleu4": _bleu_stats([tokenize(g) for g in generated], [tokenize(r) for r in references], 4),
        "rougeL": 100 * rouge_scores(generated, references)[:, 2],
        "bertscore_f1": bertscore(
            generated, references, encoder, t.bertscore_layer, t.batch_size, t.max_length
        )[:, 2],
    }


OPENING_WORDS = 8


def sameness(generated_a: Sequence[str], generated_b: Sequence[str]) -> dict[str, int]:
    """How often A wrote B's explanation (the metric tokens equal) or opened it the same way (its
    first OPENING_WORDS tokens): a soft prompt that has not steered the frozen LLM leaves it writing
    what it writes zero-shot."""
    from seller_dist.eval.text_metrics import tokenize

    ta, tb = [tokenize(g) for g in generated_a], [tokenize(g) for g in generated_b]
    return {
        "pairs": len(ta),
        "identical": sum(x == y for x, y in zip(ta, tb, strict=True)),
        "same_opening": sum(x[:OPENING_WORDS] == y[:OPENING_WORDS] for x, y in zip(ta, tb, strict=True)),
    }


def paired_text(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    """TEXT_METRICS of A against B on the same examples (text_scores of each)."""
    return {
        "bleu4": paired_corpus_bleu(a["bleu4"], b["bleu4"]),
        "rougeL": paired_scores(a["rougeL"], b["rougeL"]),
        "bertscore_f1": paired_scores(a["bertscore_f1"], b["bertscore_f1"]),
    }


def compare(
    experiment: str,
    a: str,
    b: str,
    split: str = "test",
    data: str = "",
    also: Sequence[str] = (),
    encoder: Any = None,
) -> dict[str, Any]:
    """Every seed both systems have a generations file for, paired by example key; `data` is the
    dataset the generations were made on ("" = the grid's own <experiment>/data); a system's cells
    are read from the first of `experiment`, *`also` that has them. With a sentence `encoder` the
    text metrics are paired too ("text")."""
    manifest = Manifest.load(data or str(Path(experiment) / "data"))
    records = {
        r.key: r
        for _, rs in read_batches(manifest, split, plan_batches(manifest, split, 64), None)
        for r in rs
    }
    where = {s: cells_of(s, [experiment, *also]) for s in (a, b)}
    found = {s: {int(p.name.removeprefix("seed-")) for p in where[s].glob("seed-*")} for s in (a, b)}
    seeds = sorted(
        seed
        for seed in found[a] & found[b]
        if generations_of(where[a], seed) and generations_of(where[b], seed)
    )
    if not seeds:
        raise SystemExit(f"{experiment}: no seed has generations of both '{a}' and '{b}'")
    per_seed: dict[int, dict[str, list[tuple[float, float]]]] = {}
    # per system, over every seed: is the fusion's most attended event the reference's, and does the
    # explanation name it? (does what the encoders found reach the text)
    attention = {s: dict.fromkeys(ATTENTION_CELLS, 0) for s in (a, b)}
    text: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    same: dict[int, dict[str, int]] = {}
    uncited: dict[int, np.ndarray] = {}  # per seed and example: neither explanation names a history item
    for seed in seeds:
        gens = [{g.key: g for g in read_generations(str(generations_of(where[s], seed)))} for s in (a, b)]
        if gens[0].keys() != gens[1].keys():
            raise SystemExit(f"seed {seed}: '{a}' and '{b}' scored different examples")
        keys = sorted(gens[0])
        flags = {key: tuple(example_flags(g[key], records[key]) for g in gens) for key in keys}
        uncited[seed] = np.array(
            [not (fa["cites_history"] or fb["cites_history"]) for fa, fb in flags.values()]
        )
        if encoder is not None:
            refs = [gens[0][k].reference for k in keys]
            if refs != [gens[1][k].reference for k in keys]:
                raise SystemExit(f"seed {seed}: '{a}' and '{b}' were scored against different references")
            sa, sb = (text_scores([g[k].generated for k in keys], refs, encoder) for g in gens)
            text[seed] = (sa, sb)
            same[seed] = sameness(*([g[k].generated for k in keys] for g in gens))
        pairs: dict[str, list[tuple[float, float]]] = {m: [] for m in METRICS}
        for key in keys:
            fa, fb = flags[key]
            for m in METRICS:
                if m in fa and m in fb:
                    pairs[m].append((fa[m], fb[m]))
            for name, f in ((a, fa), (b, fb)):
                if "attention_top_is_cited" in f:
                    cell = f"attention_{'on' if f['attention_top_is_cited'] else 'off'}_{'cites' if f['cites_reference_event'] else 'not'}"
                    attention[name][cell] += 1
        per_seed[seed] = pairs
    out: dict[str, Any] = {
        "a": a,
        "b": b,
        "experiment": experiment,
        "cells": {s: str(where[s]) for s in (a, b)},
        "data": data or str(Path(experiment) / "data"),
        "seeds": seeds,
        "pooled": {m: paired([p for s in seeds for p in per_seed[s][m]]) for m in METRICS},
        "per_seed": {str(s): {m: paired(per_seed[s][m]) for m in METRICS} for s in seeds},
        "attention_vs_citing": attention,
    }
    if text:
        pooled = [{m: np.concatenate([text[s][i][m] for s in seeds]) for m in TEXT_METRICS} for i in (0, 1)]
        out["text"] = {
            "pooled": paired_text(*pooled),
            "per_seed": {str(s): paired_text(*text[s]) for s in seeds},
            "same_text": {str(s): same[s] for s in seeds},
        }
        # the same pairs on the examples where neither explanation names a history item: a text gap
        # that remains there is not the words of a citation the reference lacks
        mask = np.concatenate([uncited[s] for s in seeds])
        if mask.any():
            out["text"]["neither_cites_history"] = paired_text(
                *({m: p[m][mask] for m in TEXT_METRICS} for p in pooled)
            )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="the grid's out folder (cells/, data/)")
    p.add_argument("--data", default="", help="the dataset root, when not <experiment>/data")
    p.add_argument("--a", required=True, help="system A")
    p.add_argument("--b", action="append", required=True, help="system B (repeatable: one comparison each)")
    p.add_argument(
        "--also", action="append", default=[], help="another folder with cells/<system> (repeatable)"
    )
    p.add_argument("--text", action="store_true", help="pair BLEU-4, ROUGE-L and BERTScore-F1 too")
    p.add_argument("--out", required=True, help="the artifact (JSON)")
    args = p.parse_args(argv)
    encoder = None
    if args.text:
        from seller_dist.config import EvalConfig, load_config
        from seller_dist.eval.scoring import text_encoder

        encoder = text_encoder(load_config(EvalConfig, None, ["data=unused"]))
    out = {
        "kind": "paired-compare",
        "provenance": provenance(),
        "comparisons": [
            compare(args.experiment, args.a, b, data=args.data, also=args.also, encoder=encoder)
            for b in args.b
        ],
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for c in out["comparisons"]:
        for m, r in c["pooled"].items():
            print(
                f"{c['a']} vs {c['b']} {m}: {r['rate_a']:.3f} vs {r['rate_b']:.3f} over {r['pairs']} pairs, "
                f"discordant {r['a_only']}/{r['b_only']}, sign test p={r['sign_test_p']:.3f}, "
                f"diff 95% [{r['diff_ci95'][0]:+.3f}, {r['diff_ci95'][1]:+.3f}]"
            )
        for m, r in c.get("text", {}).get("pooled", {}).items():
            print(
                f"{c['a']} vs {c['b']} {m}: {r['mean_a']:.3f} vs {r['mean_b']:.3f} over {r['pairs']} pairs, "
                f"p={r['p']:.3f}, diff 95% [{r['diff_ci95'][0]:+.3f}, {r['diff_ci95'][1]:+.3f}]"
            )


if __name__ == "__main__":
    main()
