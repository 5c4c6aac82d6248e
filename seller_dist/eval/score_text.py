"""`seller-dist score-text`: the eval job's text metrics on any system's outputs.
It scores a published system's predictions and references (XRec releases `tst_pred.pkl` and `tst_ref.pkl`)
with the code the eval job uses (`text_metrics.text_quality`), so a figure beside ours differs only by the
data, not by the metric implementation; docs/evaluation.md lists the file formats it reads.
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

from seller_dist import storage
from seller_dist.config import EvalConfig
from seller_dist.errors import UserError

MAX_PICKLE_BYTES = 512 * 1024**2
FORMATS = (".txt", ".json", ".jsonl", ".pkl", ".pickle")
TEXT_FIELDS = ("generated", "text", "explanation", "prediction", "reference")  # tried in this order


class _NoGlobalsUnpickler(pickle.Unpickler):
    """A list or dict of plain strings needs no global; anything that names one is refused."""

    def __init__(self, file: io.BytesIO, url: str):
        super().__init__(file)
        self.url = url

    def find_class(self, module: str, name: str) -> Any:
        raise UserError(
            f"{self.url}: the pickle refers to {module}.{name}; score-text reads only a pickled list of "
            "strings (no objects), so it is not loaded"
        )


def _text_of(value: Any, url: str, index: int, field: str | None) -> str:
    if isinstance(value, dict):
        keys = [field] if field else [k for k in TEXT_FIELDS if k in value]
        if not keys or keys[0] not in value:
            want = f"field '{field}'" if field else f"one of the fields {list(TEXT_FIELDS)}"
            raise UserError(f"{url}: record {index}: no {want} (keys: {sorted(value)[:8]}); use --*-field")
        value = value[keys[0]]
        where = f"field '{keys[0]}'"
    else:
        where = "the record"
    if not isinstance(value, str):
        raise UserError(f"{url}: record {index}: {where} is {type(value).__name__}, not a string")
    return value


def read_texts(url: str, field: str | None = None) -> list[str]:
    """The texts of one file, by the formats docs/evaluation.md lists; errors name the file and record."""
    name = url.rsplit("/", 1)[-1].lower()
    if not name.endswith(FORMATS):
        raise UserError(f"{url}: unknown format; use .txt, .json, .jsonl, .pkl or .pickle")
    data = storage.read_bytes(url)
    if name.endswith((".pkl", ".pickle")):
        if len(data) > MAX_PICKLE_BYTES:
            raise UserError(f"{url}: {len(data)} bytes, more than the {MAX_PICKLE_BYTES} score-text reads")
        try:
            values = _NoGlobalsUnpickler(io.BytesIO(data), url).load()
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{url}: not a readable pickle ({type(e).__name__}: {e})") from e
    elif name.endswith(".jsonl"):
        values = []
        for i, line in enumerate(data.decode("utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{url}: line {i + 1}: not JSON ({e.msg})") from e
    elif name.endswith(".json"):
        try:
            values = json.loads(data)
        except json.JSONDecodeError as e:
            raise UserError(f"{url}: not JSON ({e.msg} at line {e.lineno})") from e
    else:  # .txt
        values = data.decode("utf-8").splitlines()
    if not isinstance(values, list):
        raise UserError(f"{url}: holds a {type(values).__name__}, not a list of texts")
    return [_text_of(v, url, i, field) for i, v in enumerate(values)]


def score_texts(
    predictions: list[str], references: list[str], cfg: EvalConfig, encoder: Any = None
) -> dict[str, Any]:
    """text_quality with the eval config's text options (BERTScore only when cfg.text.bertscore)."""
    from seller_dist.eval.scoring import text_encoder, text_quality

    if cfg.text.bertscore and encoder is None:
        encoder = text_encoder(cfg)
    return text_quality(predictions, references, cfg, encoder)


def format_table(metrics: dict[str, Any]) -> str:
    from seller_dist.eval.report import markdown_table

    rows = [
        [name, f"{m['mean']:.4f}", f"{m['std']:.4f}", str(m["n"])]
        for name, m in metrics.items()
        if isinstance(m, dict) and "mean" in m
    ]
    return markdown_table(["metric", "mean", "std (bootstrap or over examples)", "n"], rows)


def score_files(
    predictions: str,
    references: str,
    cfg: EvalConfig,
    prediction_field: str | None = None,
    reference_field: str | None = None,
    limit: int = 0,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Score the aligned texts of two files (the first `limit` pairs; 0 = all) with the text options
    of `cfg`; the record `seller-dist score-text --out` writes, its provenance naming `command`."""
    preds = read_texts(predictions, prediction_field)
    refs = read_texts(references, reference_field)
    if len(preds) != len(refs):
        raise UserError(
            f"{predictions} has {len(preds)} texts but {references} has {len(refs)}; "
            "they must be aligned one to one"
        )
    if limit < 0:
        raise UserError(f"--limit must be >= 0, got {limit}")
    if limit:
        preds, refs = preds[:limit], refs[:limit]
    if not preds:
        raise UserError(f"{predictions}: no texts to score")
    metrics = score_texts(preds, refs, cfg)
    from seller_dist.version import provenance

    return {
        # commit, clean tree, machine and the command as given: an artifact the docs can cite
        "provenance": provenance(command),
        "predictions": predictions,
        "references": references,
        "n": len(preds),
        "text": metrics,
        "text_options": {
            "bertscore": cfg.text.bertscore,
            "encoder_path": cfg.encoder_path if cfg.text.bertscore else None,
            "bertscore_layer": cfg.text.bertscore_layer,
            "max_length": cfg.text.max_length,
            "bootstrap_samples": cfg.text.bootstrap_samples,
            "bootstrap_seed": cfg.text.bootstrap_seed,
        },
    }
