"""Text quality of generated explanations against references (docs/evaluation.md).

Exactly which variants (so numbers can be compared and recomputed):
- Tokenization (`tokenize`): NFKC, casefold, then words (runs of letters/digits), single CJK
  characters (Han, kana, Hangul) and single symbols (emoji, currency, ...); punctuation is dropped.
- BLEU-1 / BLEU-4: CORPUS BLEU as in PETER/PEPLER (`compute_bleu` of tensorflow/nmt) and sacrebleu:
  clipped n-gram matches summed over the corpus, uniform weights over orders 1..N, brevity penalty
  exp(1 - ref_len / sys_len) when sys_len < ref_len, no smoothing (a corpus with no matching n-gram
  of some order scores 0), scale 0-100. Equal to `sacrebleu.metrics.BLEU(max_ngram_order=N,
  smooth_method="none", tokenize="none")` on the space-joined tokens (tests check 1e-6).
- ROUGE-1 / ROUGE-2 / ROUGE-L: per example F-measure exactly as `rouge_score.RougeScorer` (no
  stemming, rougeL = sentence-level LCS, 0 when either side is empty) with the tokenizer above,
  averaged over examples, scale 0-100.
- BERTScore P/R/F1: BERTScore's algorithm (greedy cosine matching of token embeddings, no idf, no
  baseline rescaling) with all-MiniLM-L6-v2 hidden states instead of roberta-large, so the numbers
  are NOT comparable to published BERTScore values; only to each other. 0 for an empty side.
- USR: unique generated token sequences / number of examples (PETER `unique_sentence_percent`).
- FMR / FCR / DIV (PETER, over the aspect words of the scored records; None without aspects):
  FMR = share of examples whose generation contains one of the record's aspects; FCR = distinct
  aspects generated / aspects in the vocabulary; DIV = mean over pairs of examples of the number of
  aspects both generations contain (PETER `feature_diversity`: LOWER is more diverse).
- Std: per-example metrics report the std across examples (population std); corpus metrics (BLEU,
  USR, FCR, DIV) report the std over `bootstrap_samples` resamples of the examples with a fixed seed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """The one tokenization every text metric here uses (see the module docstring)."""
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


# ------------------------------------------------------------------------------------------ BLEU
def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_stats(hyp: Sequence[str], ref: Sequence[str], max_order: int) -> np.ndarray:
    """[correct_1..N, total_1..N, hyp_len, ref_len] of one example (sums to corpus statistics)."""
    correct, total = [], []
    for n in range(1, max_order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        correct.append(sum(min(c, r[g]) for g, c in h.items()))
        total.append(max(0, len(hyp) - n + 1))
    return np.array(correct + total + [len(hyp), len(ref)], dtype=np.float64)


def bleu_from_stats(stats: np.ndarray, max_order: int) -> float:
    """Corpus BLEU (0-100) from summed statistics, sacrebleu's arithmetic with smooth_method=none."""
    correct, total = stats[:max_order], stats[max_order : 2 * max_order]
    sys_len, ref_len = stats[2 * max_order], stats[2 * max_order + 1]
    if sys_len == 0 or np.any(total == 0) or np.any(correct == 0):
        return 0.0
    bp = 1.0 if sys_len >= ref_len else math.exp(1.0 - ref_len / sys_len)
    log_p = sum(math.log(100.0 * c / t) for c, t in zip(correct, total, strict=True)) / max_order
    return bp * math.exp(log_p)


def corpus_bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_order: int) -> float:
    stats = sum(
        (bleu_stats(h, r, max_order) for h, r in zip(hyps, refs, strict=True)), np.zeros(2 * max_order + 2)
    )
    return bleu_from_stats(stats, max_order)


def bleu_with_std(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_order: int, boot: np.ndarray
) -> dict[str, float]:
    per = np.stack([bleu_stats(h, r, max_order) for h, r in zip(hyps, refs, strict=True)])
    resampled = [bleu_from_stats(s, max_order) for s in boot @ per]
    return {"mean": bleu_from_stats(per.sum(0), max_order), "std": float(np.std(resampled)), "n": len(hyps)}


# ----------------------------------------------------------------------------------------- ROUGE
def _fmeasure(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> tuple[float, float, float]:
    """(precision, recall, F) as rouge_score's `_score_ngrams`."""
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    overlap = sum(min(c, r[g]) for g, c in h.items())
    p = overlap / max(sum(h.values()), 1)
    rec = overlap / max(sum(r.values()), 1)
    return p, rec, _fmeasure(p, rec)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> tuple[float, float, float]:
    """(precision, recall, F) as rouge_score's `_score_lcs` (sentence-level rougeL)."""
    if not hyp or not ref:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(ref, hyp)
    p, r = lcs / len(hyp), lcs / len(ref)
    return p, r, _fmeasure(p, r)


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
    return p, rec, _fmeasure(p, rec)


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
    out: dict[str, Any] = {
        "bleu1": bleu_with_std(hyps, refs, 1, boot),
        "bleu4": bleu_with_std(hyps, refs, 4, boot),
        "rouge1": summary([100 * rouge_n(h, r, 1)[2] for h, r in zip(hyps, refs, strict=True)]),
        "rouge2": summary([100 * rouge_n(h, r, 2)[2] for h, r in zip(hyps, refs, strict=True)]),
        "rougeL": summary([100 * rouge_l(h, r)[2] for h, r in zip(hyps, refs, strict=True)]),
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
