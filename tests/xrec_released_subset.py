"""XRec's released predictions and our systems' generations on the same test examples, as JSON lines
that `seller-dist score-text` reads (docs/results.md, "Published numbers side by side").

Not collected by pytest (a research helper). XRec's tst_pred.pkl / tst_ref.pkl are lists aligned
with each other but carry no (uid, iid), so an example of ours is matched by its reference text
(case and punctuation folded). Writes OUT/<system>-seed-<S>.jsonl for every evaluated cell of the
grid, and OUT/xrec-released.jsonl, all on the same matched examples in the same order:

    .venv/bin/python -m tests.xrec_released_subset XREC_DATA_DIR GRID_OUT OUT
    for f in OUT/*.jsonl; do seller-dist score-text --predictions $f --prediction-field generated \\
        --references $f --reference-field reference --out ${f%.jsonl}.json; done
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from seller_dist.eval.score_text import read_texts


def fold(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("xrec_dir", help="the release's data/yelp (tst_pred.pkl, tst_ref.pkl)")
    p.add_argument("grid_out", help="the experiment's out folder (cells/<system>/seed-<S>/eval)")
    p.add_argument("out")
    args = p.parse_args()
    preds = read_texts(str(Path(args.xrec_dir) / "tst_pred.pkl"))  # no-globals unpickler
    refs = read_texts(str(Path(args.xrec_dir) / "tst_ref.pkl"))
    index: dict[str, int] = {}
    for i, r in enumerate(refs):
        index.setdefault(fold(r), i)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = None
    for f in sorted(Path(args.grid_out).glob("cells/*/seed-*/eval/generations.jsonl")):
        system, seed = f.parts[-4], f.parts[-3]
        gens = [json.loads(line) for line in f.read_text().splitlines()]
        matched = [g for g in gens if fold(g["reference"]) in index]
        if keys is not None and [g["key"] for g in matched] != keys:
            raise SystemExit(f"{f}: not the same examples as the other cells")
        keys = [g["key"] for g in matched]
        lines = [json.dumps({"generated": g["generated"], "reference": g["reference"]}) for g in matched]
        (out / f"{system}-{seed}.jsonl").write_text("".join(x + "\n" for x in lines))
    if keys is None:
        raise SystemExit(f"{args.grid_out}: no cells/*/seed-*/eval/generations.jsonl")
    released = [
        json.dumps(
            {"generated": preds[index[fold(g["reference"])]], "reference": refs[index[fold(g["reference"])]]}
        )
        for g in matched
    ]
    (out / "xrec-released.jsonl").write_text("".join(x + "\n" for x in released))
    print(f"{len(keys)} matched examples -> {out}")


if __name__ == "__main__":
    main()
