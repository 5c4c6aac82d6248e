"""Text quality of generated explanations against references (docs/evaluation.md, "Text quality").
One tokenization (`tokenize`) feeds every metric: PETER/PEPLER's corpus BLEU-1/4 computed by sacrebleu,
ROUGE-1/2/L by rouge-score, BERTScore's algorithm on all-MiniLM-L6-v2 states, USR and PETER's aspect metrics
FMR, FCR and DIV; each variant is pinned, and named in the docs, so numbers can be compared and recomputed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+|[^\w\s]")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def tokenize(text: str) -> list[str]:
    """The one tokenization every text metric here uses (docs/evaluation.md, "Text quality")."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for m in _TOKEN.finditer(text):
        t = m.group()
        if len(t) == 1 and not t.isalnum() and not unicodedata.category(t).startswith("S"):
            continue  # punctuation and marks
        out.append(t)
    return out


class MetricTokenizer:
    """`tokenize` in the shape rouge_score.RougeScorer(tokenizer=...) expects."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def summary(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """mean and std across examples (population std); n for the reader."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std()), "n": int(a.size)}


def bootstrap_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) resample multiplicities: row b says how often example i is drawn in resample b."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)


# ----------------------------------------------------------------------------------- BLEU / ROUGE
def _bleu(max_order: int) -> BLEU:
    """Corpus BLEU-N as documented: no smoothing, no tokenization of its own (force: the tokens
    never end in " ." since punctuation is dropped, so it only silences sacrebleu's check)."""
    return BLEU(max_ngram_order=max_order, smooth_method="none", tokenize="none", force=True)


def _joined(token_lists: Sequence[Sequence[str]]) -> list[str]:
    """Tokens joined by single spaces: sacrebleu (tokenize="none") splits them back exactly, since a
    token never contains whitespace."""
    return [" ".join(t) for t in token_lists]


def _bleu_stats(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_order: int) -> np.ndarray:
    """(n, 2 + 2N) per-example statistics from sacrebleu ([hyp_len, ref_len, correct_1..N,
    total_1..N]; summed over examples they are the corpus statistics). `_extract_corpus_statistics`
    is the hook sacrebleu's own paired bootstrap uses to rescore resampled corpora."""
    stats = _bleu(max_order)._extract_corpus_statistics(_joined(hyps), [_joined(refs)])
    return np.asarray(stats, dtype=np.float64).reshape(len(hyps), 2 + 2 * max_order)


def _bleu_from_stats(stats: np.ndarray, max_order: int) -> float:
    """sacrebleu's corpus BLEU (0-100) from summed statistics (a resample's weighted sum too)."""
    return BLEU.compute_bleu(
        correct=list(stats[2 : 2 + max_order]),
        total=list(stats[2 + max_order :]),
        sys_len=int(stats[0]),
        ref_len=int(stats[1]),
        smooth_method="none",
        max_ngram_order=max_order,
    ).score


def bleu_with_std(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_order: int, boot: np.ndarray
) -> dict[str, float]:
    """Corpus BLEU and its std over the bootstrap resamples `boot` (resample multiplicities)."""
    per = _bleu_stats(hyps, refs, max_order)
    resampled = [_bleu_from_stats(s, max_order) for s in boot @ per]
    return {"mean": _bleu_from_stats(per.sum(0), max_order), "std": float(np.std(resampled)), "n": len(hyps)}


def rouge_scores(generated: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(n, 3) per-example ROUGE-1, ROUGE-2, ROUGE-L F-measures (0-1) of raw texts, by rouge_score
    with `MetricTokenizer` (each pair tokenized once for all three)."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=MetricTokenizer())
    out = np.zeros((len(generated), len(ROUGE_TYPES)))
    for i, (g, r) in enumerate(zip(generated, references, strict=True)):
        s = scorer.score(r, g)  # rouge_score takes (target, prediction)
        out[i] = [s[t].fmeasure for t in ROUGE_TYPES]
    return out


# ------------------------------------------------------------------------------------- BERTScore
def greedy_match(cand: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """BERTScore (idf off) of one pair from token embeddings: cosine similarities, each candidate
    token matched to its most similar reference token (precision) and vice versa (recall)."""
    if len(cand) == 0 or len(ref) == 0:
        return 0.0, 0.0, 0.0
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True).clip(1e-12)
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True).clip(1e-12)
    sim = c.astype(np.float64) @ r.astype(np.float64).T
    p, rec = float(sim.max(1).mean()), float(sim.max(0).mean())
    return p, rec, (2 * p * rec / (p + rec) if p + rec > 0 else 0.0)


def bertscore(
    generated: Sequence[str],
    references: Sequence[str],
    encoder: Any,
    layer: int,
    batch_size: int,
    max_length: int,
) -> np.ndarray:
    """(n, 3) per-example P, R, F1 with the encoder's token embeddings of `layer`."""
    cand = encoder.token_embeddings(generated, layer, batch_size, max_length)
    refs = encoder.token_embeddings(references, layer, batch_size, max_length)
    return np.array([greedy_match(c, r) for c, r in zip(cand, refs, strict=True)]).reshape(-1, 3)


# --------------------------------------------------------------------------------- USR / aspects
def usr_with_std(hyps: Sequence[Sequence[str]], boot: np.ndarray) -> dict[str, float]:
    """Unique sentence ratio; std by bootstrap (a resample's duplicates count once, as in PETER)."""
    ids: dict[tuple[str, ...], int] = {}
    sent = np.array([ids.setdefault(tuple(h), len(ids)) for h in hyps])
    onehot = np.zeros((len(hyps), len(ids)))
    onehot[np.arange(len(hyps)), sent] = 1.0
    n = len(hyps)
    resampled = ((boot @ onehot) > 0).sum(1) / n
    return {"mean": len(ids) / n, "std": float(np.std(resampled)), "n": n}


def aspect_metrics(
    hyps: Sequence[Sequence[str]], aspects: Sequence[Sequence[str]], boot: np.ndarray
) -> dict[str, Any] | None:
    """FMR / FCR / DIV (PETER) or None when no record has aspect words."""
    vocab = sorted({tuple(tokenize(a)) for asp in aspects for a in asp} - {()})
    if not vocab:
        return None
    col = {a: j for j, a in enumerate(vocab)}
    lengths = sorted({len(a) for a in vocab})
    present = np.zeros((len(hyps), len(vocab)))
    for i, h in enumerate(hyps):  # look up each n-gram of the aspect lengths (large vocabularies stay fast)
        for k in lengths:
            for s in range(len(h) - k + 1):
                j = col.get(tuple(h[s : s + k]))
                if j is not None:
                    present[i, j] = 1.0
    fmr = [
        float(any(present[i, col[t]] for t in {tuple(tokenize(a)) for a in asp} - {()}))
        for i, asp in enumerate(aspects)
    ]

    def fcr(counts: np.ndarray) -> float:
        return float(((counts @ present) > 0).sum() / len(vocab))

    def div(counts: np.ndarray) -> float:
        m = counts.sum()
        if m < 2:
            return 0.0
        shared = (np.sum((counts @ present) ** 2) - counts @ present.sum(1)) / 2
        return float(shared / (m * (m - 1) / 2))

    ones = np.ones(len(hyps))
    return {
        "fmr": summary(fmr),
        "fcr": {"mean": fcr(ones), "std": float(np.std([fcr(c) for c in boot])), "n": len(hyps)},
        "div": {"mean": div(ones), "std": float(np.std([div(c) for c in boot])), "n": len(hyps)},
        "aspect_vocab_size": len(vocab),
    }


# ------------------------------------------------------------------------------------- all of it
def text_quality(
    generated: Sequence[str],
    references: Sequence[str],
    aspects: Sequence[Sequence[str]] | None = None,
    encoder: Any = None,
    bertscore_layer: int = -1,
    batch_size: int = 64,
    max_length: int = 128,
    bootstrap_samples: int = 200,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Every text metric as {"mean", "std", "n"} (BLEU/ROUGE/BERTScore on 0-100 / 0-1 as documented).
    BERTScore is skipped (absent) when no encoder is given."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generations but {len(references)} references")
    if not generated:
        raise ValueError("no examples to score")
    hyps = [tokenize(t) for t in generated]
    refs = [tokenize(t) for t in references]
    boot = bootstrap_counts(len(hyps), bootstrap_samples, bootstrap_seed)
    rouge = 100 * rouge_scores(generated, references)
    out: dict[str, Any] = {
        "bleu1": bleu_with_std(hyps, refs, 1, boot),
        "bleu4": bleu_with_std(hyps, refs, 4, boot),
        **{t: summary(rouge[:, k]) for k, t in enumerate(ROUGE_TYPES)},
        "usr": usr_with_std(hyps, boot),
    }
    if encoder is not None:
        prf = bertscore(generated, references, encoder, bertscore_layer, batch_size, max_length)
        out["bertscore_p"], out["bertscore_r"], out["bertscore_f1"] = (summary(prf[:, k]) for k in range(3))
    asp = aspect_metrics(hyps, aspects, boot) if aspects is not None else None
    if asp is not None:
        out["fmr"], out["fcr"], out["div"] = asp["fmr"], asp["fcr"], asp["div"]
        out["aspect_vocab_size"] = asp["aspect_vocab_size"]
    return out
