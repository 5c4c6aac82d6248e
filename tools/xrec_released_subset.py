"""XRec's released predictions beside our grid's generations, on the same test examples, scored by
the same code as `seller-dist score-text` (docs/results.md, "Published numbers side by side").

A research helper, not a product feature (tests/unit/test_xrec_released_subset.py). XRec's tst_pred.pkl / tst_ref.pkl are lists aligned
with each other but carry no (uid, iid), so an example of ours is matched by its reference text
(case and punctuation folded). Writes OUT/<system>-seed-<S>.jsonl for every evaluated cell of the
grid and OUT/xrec-released.jsonl, all on the same matched examples in the same order, as
{"generated", "reference"} JSON lines that `seller-dist score-text` reads; with --artifact, scores
every file with the eval job's text metrics and writes one JSON artifact (provenance, the matched
count, each run's metrics) that `./launch.sh tables` turns into the docs' table:

    .venv/bin/python -m tools.xrec_released_subset XREC_DATA_DIR GRID_OUT OUT --artifact A.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from seller_dist.eval.score_text import read_texts

RELEASED = "xrec-released"  # XRec's own predictions (Llama-2-7B-chat + its adapter, trained on trn.pkl)


def fold(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def matched_files(xrec_dir: str, grid_out: str, out: Path) -> dict[tuple[str, str], Path]:
    """Write the matched JSON lines; (system, seed) -> file, XRec's own as (RELEASED, "")."""
    preds = read_texts(str(Path(xrec_dir) / "tst_pred.pkl"))  # no-globals unpickler
    refs = read_texts(str(Path(xrec_dir) / "tst_ref.pkl"))
    index: dict[str, int] = {}
    for i, r in enumerate(refs):
        index.setdefault(fold(r), i)
    out.mkdir(parents=True, exist_ok=True)
    keys, matched, files = None, [], {}
    for f in sorted(Path(grid_out).glob("cells/*/seed-*/eval/generations.jsonl")):
        system, seed = f.parts[-4], f.parts[-3]
        gens = [json.loads(line) for line in f.read_text().splitlines()]
        matched = [g for g in gens if fold(g["reference"]) in index]
        if keys is not None and [g["key"] for g in matched] != keys:
            raise SystemExit(f"{f}: not the same examples as the other cells")
        keys = [g["key"] for g in matched]
        lines = [json.dumps({"generated": g["generated"], "reference": g["reference"]}) for g in matched]
        files[(system, seed)] = out / f"{system}-{seed}.jsonl"
        files[(system, seed)].write_text("".join(x + "\n" for x in lines))
    if keys is None:
        raise SystemExit(f"{grid_out}: no cells/*/seed-*/eval/generations.jsonl")
    released = [
        json.dumps(
            {"generated": preds[index[fold(g["reference"])]], "reference": refs[index[fold(g["reference"])]]}
        )
        for g in matched
    ]
    files[(RELEASED, "")] = out / f"{RELEASED}.jsonl"
    files[(RELEASED, "")].write_text("".join(x + "\n" for x in released))
    return files


def score_all(files: dict[tuple[str, str], Path], argv: list[str], xrec_dir: str, grid_out: str) -> dict:
    """Every file's text metrics (score-text's function and default options, BERTScore included)."""
    from seller_dist.config import EvalConfig, load_config
    from seller_dist.eval.score_text import score_texts
    from seller_dist.eval.scoring import text_encoder
    from seller_dist.version import provenance

    cfg = load_config(EvalConfig, None, ["data=unused"])
    encoder = text_encoder(cfg)
    runs = []
    for (system, seed), f in sorted(files.items()):
        preds = read_texts(str(f), "generated")
        refs = read_texts(str(f), "reference")
        runs.append(
            {"system": system, "seed": seed, "n": len(preds), "text": score_texts(preds, refs, cfg, encoder)}
        )
    return {
        "kind": "text-side-by-side",
        "provenance": provenance(["python", "-m", "tools.xrec_released_subset", *argv]),
        "xrec_dir": xrec_dir,
        "grid": grid_out,
        "matched": runs[0]["n"],
        "text_options": {"bertscore": cfg.text.bertscore, "encoder_path": cfg.encoder_path},
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("xrec_dir", help="the release's data/yelp (tst_pred.pkl, tst_ref.pkl)")
    p.add_argument("grid_out", help="the experiment's out folder (cells/<system>/seed-<S>/eval)")
    p.add_argument("out", help="folder for the matched JSON lines")
    p.add_argument("--artifact", default=None, help="score every file and write this JSON artifact")
    args = p.parse_args(argv)
    files = matched_files(args.xrec_dir, args.grid_out, Path(args.out))
    n = len(read_texts(str(files[(RELEASED, "")]), "generated"))
    print(f"{n} matched examples, {len(files)} files -> {args.out}")
    if args.artifact:
        art = score_all(files, argv, args.xrec_dir, args.grid_out)
        Path(args.artifact).write_text(json.dumps(art, indent=1) + "\n")
        print(f"scores -> {args.artifact}")


if __name__ == "__main__":
    main()
