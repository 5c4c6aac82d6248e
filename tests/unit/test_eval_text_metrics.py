"""Text metrics agree with sacrebleu / rouge-score to 1e-6 (empty generation, one-word reference,
unicode included); USR / FMR / FCR / DIV and BERTScore's matching against hand computations."""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from seller_dist.eval import text_metrics as tm
from tests.eval_helpers import shared_encoder

PAIRS = [  # (generated, reference)
    ("the cat sat on the mat", "the cat is on the mat"),
    ("", "an empty generation scores nothing"),
    ("Great", "great"),  # one-word reference (and generation)
    ("a great kettle for tea lovers", "great"),  # one-word reference, longer generation
    ("Café crème brûlée 🍰 très bon!", "café crème brûlée 🍰 bon"),  # accents, emoji
    ("我喜欢这个产品 good", "我很喜欢这个 good product"),  # CJK characters mixed with latin
    (
        "because you bought Nera Pro Yoga Mat 106 last week",
        "Recommended because you just bought Nera Pro Yoga Mat 106.",
    ),
    ("totally unrelated words here", "nothing in common at all"),
]
GEN = [g for g, _ in PAIRS]
REF = [r for _, r in PAIRS]


def _joined(texts: list[str]) -> list[str]:
    return [" ".join(tm.tokenize(t)) for t in texts]


def _sacrebleu(gen: list[str], ref: list[str], order: int) -> float:
    bleu = BLEU(max_ngram_order=order, smooth_method="none", tokenize="none")
    return bleu.corpus_score(_joined(gen), [_joined(ref)]).score


def corpus_bleu(hyps: list[list[str]], refs: list[list[str]], order: int) -> float:
    """Corpus BLEU as the eval job computes it: `bleu_with_std`'s mean (one resample of every example)."""
    return tm.bleu_with_std(hyps, refs, order, np.ones((1, len(hyps))))["mean"]


def test_tokenize_unicode():
    assert tm.tokenize("Café CRÈME, 🍰!") == ["café", "crème", "🍰"]
    assert tm.tokenize("我喜欢abc 123") == ["我", "喜", "欢", "abc", "123"]
    assert tm.tokenize("") == []
    assert tm.tokenize("ﬁne") == ["fine"]  # NFKC ligature


def test_tokenize_gives_its_tokens_back_from_their_space_joined_text():
    # BLEU's n-gram counts and sacrebleu split the space-joined tokens on whitespace: both rely on
    # this, for every character
    chars = [  # every assigned code point (unassigned, private-use and surrogates give no token)
        chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) not in ("Cn", "Co", "Cs")
    ]
    for start in range(0, len(chars), 1 << 14):  # one long text per block of code points
        text = " ".join(f"{c} a{c}b {c}{c} İ{c}\u0307" for c in chars[start : start + (1 << 14)])
        tokens = tm.tokenize(text)
        assert tm.tokenize(" ".join(tokens)) == tokens == " ".join(tokens).split(), hex(start)


@pytest.mark.parametrize("order", [1, 4])
@pytest.mark.parametrize(
    "subset",
    [list(range(len(PAIRS))), [1], [2], [3], [4], [5], [1, 2, 4, 5], [6, 7], [0, 6]],
    ids=[
        "all",
        "empty-gen",
        "one-word",
        "one-word-ref",
        "accents-emoji",
        "cjk",
        "mixed",
        "no-overlap",
        "pair",
    ],
)
def test_corpus_bleu_equals_sacrebleu(order: int, subset: list[int]):
    gen, ref = [GEN[i] for i in subset], [REF[i] for i in subset]
    ours = corpus_bleu([tm.tokenize(t) for t in gen], [tm.tokenize(t) for t in ref], order)
    assert ours == pytest.approx(_sacrebleu(gen, ref, order), abs=1e-6)


def test_corpus_bleu_all_empty_generations_is_zero_like_sacrebleu():
    gen, ref = ["", ""], ["one", "two words"]
    assert corpus_bleu([[], []], [["one"], ["two", "words"]], 4) == _sacrebleu(gen, ref, 4) == 0.0


def test_bleu_is_nonzero_on_the_fixed_corpus():
    # guards the comparisons above against agreeing on trivial zeros
    assert _sacrebleu(GEN, REF, 4) > 10 and _sacrebleu(GEN, REF, 1) > 30


@pytest.mark.parametrize("i", range(len(PAIRS)))
def test_rouge_equals_rouge_score(i: int):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tm.MetricTokenizer())
    lib = scorer.score(REF[i], GEN[i])  # rouge_score takes (target, prediction)
    ours = tm.rouge_scores([GEN[i]], [REF[i]])[0]  # the F-measures the eval job reports
    assert list(ours) == pytest.approx(
        [lib[name].fmeasure for name in ("rouge1", "rouge2", "rougeL")], abs=1e-6
    )


def test_text_quality_means_match_libraries_and_bootstrap_std_is_reproducible():
    res = tm.text_quality(GEN, REF, bootstrap_samples=50, bootstrap_seed=3)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=tm.MetricTokenizer())
    want = [100 * scorer.score(r, g)["rougeL"].fmeasure for g, r in PAIRS]
    assert res["rougeL"]["mean"] == pytest.approx(np.mean(want), abs=1e-6)
    assert res["rougeL"]["std"] == pytest.approx(np.std(want), abs=1e-6)
    assert res["bleu4"]["mean"] == pytest.approx(_sacrebleu(GEN, REF, 4), abs=1e-6)
    # bootstrap std = std of sacrebleu on the explicitly resampled corpora (same seed, same draws)
    boot = tm.bootstrap_counts(len(GEN), 50, 3)
    scores = []
    for counts in boot:
        idx = [i for i, c in enumerate(counts) for _ in range(int(c))]
        scores.append(_sacrebleu([GEN[i] for i in idx], [REF[i] for i in idx], 4))
    assert res["bleu4"]["std"] == pytest.approx(np.std(scores), abs=1e-6)
    assert res["bleu4"]["std"] > 0
    assert tm.text_quality(GEN, REF, bootstrap_samples=50, bootstrap_seed=3) == res
    assert "bertscore_f1" not in res and "fmr" not in res  # no encoder, no aspects


def test_usr_hand_computed():
    res = tm.usr_with_std(
        [tm.tokenize(t) for t in ["A b.", "a b", "c", "", ""]], tm.bootstrap_counts(5, 10, 0)
    )
    assert res["mean"] == pytest.approx(3 / 5)  # {a b}, {c}, {} are the unique sentences


def test_fmr_fcr_div_hand_computed():
    gens = ["the battery is great", "screen and battery", "nice price", "long battery-life"]
    aspects = [["battery"], ["screen"], ["price"], ["screen"]]
    res = tm.text_quality(gens, ["ref"] * 4, aspects, bootstrap_samples=20)
    # aspect vocab {battery, screen, price}; generated sets {battery} {screen, battery} {price} {battery}
    assert res["aspect_vocab_size"] == 3
    assert res["fmr"]["mean"] == pytest.approx(3 / 4)  # the last one misses "screen"
    assert res["fcr"]["mean"] == pytest.approx(3 / 3)
    # DIV: shared aspects over the 6 pairs: (0,1)=1 (0,3)=1 (1,3)=1, others 0 -> 3 / 6
    assert res["div"]["mean"] == pytest.approx(0.5)


def test_multi_word_aspects_and_no_aspects():
    hyps = [tm.tokenize("long Battery Life here"), tm.tokenize("battery only")]
    res = tm.aspect_metrics(hyps, [["battery life"], ["battery life"]], tm.bootstrap_counts(2, 5, 0))
    assert res["fmr"]["mean"] == pytest.approx(0.5) and res["fcr"]["mean"] == 1.0
    assert res["div"]["mean"] == 0.0
    assert tm.aspect_metrics(hyps, [[], []], tm.bootstrap_counts(2, 5, 0)) is None


def test_greedy_match_hand_computed():
    cand = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])  # norms must not matter
    ref = np.array([[1.0, 0.0], [1.0, 1.0]])
    s = 1 / math.sqrt(2)
    p = (1 + s + s) / 3  # each candidate token's best cosine
    r = (1 + s) / 2  # each reference token's best cosine
    assert tm.greedy_match(cand, ref) == pytest.approx((p, r, 2 * p * r / (p + r)), abs=1e-12)
    assert tm.greedy_match(np.zeros((0, 2)), ref) == (0.0, 0.0, 0.0)


def test_bertscore_with_minilm_matches_unbatched_hidden_states():
    import torch

    enc = shared_encoder()
    gen = [
        "you bought a kettle",
        "",
        "Café 🍰 très bon",
        "a much longer sentence about tents and trail shoes",
    ]
    ref = ["you bought a kettle", "something", "café bon", "tents"]
    prf = tm.bertscore(gen, ref, enc, layer=-1, batch_size=3, max_length=64)
    assert prf[0] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)  # identical texts
    assert list(prf[1]) == [0.0, 0.0, 0.0]  # empty generation
    for i in (2, 3):  # one text at a time, no padding: hidden states without [CLS] / [SEP]
        with torch.no_grad():
            hc = enc.model(
                **enc.tokenizer(gen[i], return_tensors="pt"), output_hidden_states=True
            ).hidden_states[-1][0, 1:-1]
            hr = enc.model(
                **enc.tokenizer(ref[i], return_tensors="pt"), output_hidden_states=True
            ).hidden_states[-1][0, 1:-1]
        assert prf[i] == pytest.approx(tm.greedy_match(hc.numpy(), hr.numpy()), abs=1e-5)
    assert 0.3 < prf[3][2] < 0.95
