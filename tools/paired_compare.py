"""Does system A cite differently from system B beyond chance? A grid's mean ± std over 3 seeds cannot
say: each seed scores about 40 examples, so one example moves a rate by 0.025. This pairs the two
systems' explanations of the same test example under the same seed (the grid's
cells/<system>/seed-<S>/eval/generations.jsonl), scores each with the eval's own grounding code on
the same records, and gives per metric the discordant pairs, the exact two-sided sign test on them
(McNemar's exact test) and a paired bootstrap 95 % interval of the difference in rate. It exists to
read a measured gap (docs/results.md), not as a product feature.

    python -m tools.paired_compare --experiment outputs/experiments/X --a SYS_A --b SYS_B --out X.json
    (--data DATA when the generations were made on a dataset other than the grid's <experiment>/data;
    --also FOLDER, repeatable, for a system whose cells/ are in another folder, e.g. re-scored checkpoints)
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seller_dist.data.schema import ExampleRecord
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import plan_batches, read_batches
from seller_dist.eval.generations import Generation, read_generations
from seller_dist.eval.grounding import cited_item_ids, reference_event
from seller_dist.version import provenance

METRICS = ("cites_history", "cites_reference_event", "attention_top_is_cited")
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


def compare(
    experiment: str, a: str, b: str, split: str = "test", data: str = "", also: Sequence[str] = ()
) -> dict[str, Any]:
    """Every seed both systems have a generations file for, paired by example key; `data` is the
    dataset the generations were made on ("" = the grid's own <experiment>/data); a system's cells
    are read from the first of `experiment`, *`also` that has them."""
    manifest = Manifest.load(data or str(Path(experiment) / "data"))
    records = {
        r.key: r
        for _, rs in read_batches(manifest, split, plan_batches(manifest, split, 64), None)
        for r in rs
    }
    where = {s: cells_of(s, [experiment, *also]) for s in (a, b)}
    seeds = sorted(
        int(p.name.removeprefix("seed-"))
        for p in where[a].glob("seed-*")
        if (p / "eval" / "generations.jsonl").exists()
        and (where[b] / p.name / "eval" / "generations.jsonl").exists()
    )
    if not seeds:
        raise SystemExit(f"{experiment}: no seed has generations of both '{a}' and '{b}'")
    per_seed: dict[int, dict[str, list[tuple[float, float]]]] = {}
    # per system, over every seed: is the fusion's most attended event the reference's, and does the
    # explanation name it? (does what the encoders found reach the text)
    attention = {s: dict.fromkeys(ATTENTION_CELLS, 0) for s in (a, b)}
    for seed in seeds:
        gens = [
            {
                g.key: g
                for g in read_generations(str(where[s] / f"seed-{seed}" / "eval" / "generations.jsonl"))
            }
            for s in (a, b)
        ]
        if gens[0].keys() != gens[1].keys():
            raise SystemExit(f"seed {seed}: '{a}' and '{b}' scored different examples")
        pairs: dict[str, list[tuple[float, float]]] = {m: [] for m in METRICS}
        for key in sorted(gens[0]):
            fa, fb = (example_flags(g[key], records[key]) for g in gens)
            for m in METRICS:
                if m in fa and m in fb:
                    pairs[m].append((fa[m], fb[m]))
            for name, f in ((a, fa), (b, fb)):
                if "attention_top_is_cited" in f:
                    cell = f"attention_{'on' if f['attention_top_is_cited'] else 'off'}_{'cites' if f['cites_reference_event'] else 'not'}"
                    attention[name][cell] += 1
        per_seed[seed] = pairs
    return {
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


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="the grid's out folder (cells/, data/)")
    p.add_argument("--data", default="", help="the dataset root, when not <experiment>/data")
    p.add_argument("--a", required=True, help="system A")
    p.add_argument("--b", action="append", required=True, help="system B (repeatable: one comparison each)")
    p.add_argument(
        "--also", action="append", default=[], help="another folder with cells/<system> (repeatable)"
    )
    p.add_argument("--out", required=True, help="the artifact (JSON)")
    args = p.parse_args(argv)
    out = {
        "kind": "paired-compare",
        "provenance": provenance(),
        "comparisons": [compare(args.experiment, args.a, b, data=args.data, also=args.also) for b in args.b],
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for c in out["comparisons"]:
        for m, r in c["pooled"].items():
            print(
                f"{c['a']} vs {c['b']} {m}: {r['rate_a']:.3f} vs {r['rate_b']:.3f} over {r['pairs']} pairs, "
                f"discordant {r['a_only']}/{r['b_only']}, sign test p={r['sign_test_p']:.3f}, "
                f"diff 95% [{r['diff_ci95'][0]:+.3f}, {r['diff_ci95'][1]:+.3f}]"
            )


if __name__ == "__main__":
    main()
