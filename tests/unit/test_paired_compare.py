"""tools/paired_compare.py: the exact sign test, and pairs built from a grid's generations files that
count what the eval's own grounding counts."""

from __future__ import annotations

import pytest

from seller_dist.eval.generations import Generation, SupportingEvent, write_generations
from seller_dist.eval.grounding import grounding_rates
from tests.conftest import make_dataset, make_records
from tools.paired_compare import compare, sign_test


@pytest.mark.parametrize(
    ("a_only", "b_only", "p"),
    [(2, 8, 56 / 1024 * 2), (8, 2, 56 / 1024 * 2), (0, 6, 2 / 64), (5, 5, 1.0), (0, 0, 1.0), (0, 1, 1.0)],
)
def test_sign_test_is_the_exact_two_sided_binomial(a_only: int, b_only: int, p: float) -> None:
    assert sign_test(a_only, b_only) == pytest.approx(p, abs=1e-12)


def test_pairs_of_two_systems_count_what_the_eval_counts(tmp_path) -> None:
    records = make_records(24, "test", max_history=4)
    for i, r in enumerate(records):  # every fourth record has no reference event
        r.meta = {} if i % 4 == 3 else {"cited_item_id": r.history[-1].item_id, "cited_offset": 0}
    make_dataset(str(tmp_path / "dataset"), 0, 1, splits=("test",), records={"test": records})

    def texts(cites: list[bool]) -> list[str]:
        return [
            f"Because you viewed {r.history[-1].title}." if c else "A fine pick."
            for r, c in zip(records, cites, strict=True)
        ]

    a_cites = [i % 2 == 0 for i in range(24)]
    b_cites = [i % 3 == 0 for i in range(24)]
    for system, cites, top in (("a", a_cites, 0), ("b", b_cites, 1)):
        for seed in (0, 1):
            gens = [
                Generation(
                    r.key, r.user_id, r.item_id, "ref", t, [SupportingEvent(top, "x", "x", 1.0)], r.meta
                )
                for r, t in zip(records, texts(cites), strict=True)
            ]
            write_generations(
                str(tmp_path / "cells" / system / f"seed-{seed}" / "eval" / "generations.jsonl"), gens
            )
    out = compare(str(tmp_path), "a", "b", data=str(tmp_path / "dataset"))  # not <experiment>/data
    assert out["seeds"] == [0, 1]
    expected_a = grounding_rates(texts(a_cites), records)["cites_reference_event"]["mean"]
    cited = out["pooled"]["cites_reference_event"]
    with_ref = [i for i in range(24) if i % 4 != 3]
    assert cited["pairs"] == 2 * len(with_ref)
    assert cited["rate_a"] == pytest.approx(expected_a) and expected_a > 0
    assert cited["rate_b"] == pytest.approx(
        grounding_rates(texts(b_cites), records)["cites_reference_event"]["mean"]
    )
    assert cited["a_only"] == 2 * sum(a_cites[i] and not b_cites[i] for i in with_ref)
    assert cited["b_only"] == 2 * sum(b_cites[i] and not a_cites[i] for i in with_ref)
    assert cited["both"] == 2 * sum(a_cites[i] and b_cites[i] for i in with_ref)
    assert cited["sign_test_p"] == sign_test(cited["a_only"], cited["b_only"])
    lo, hi = cited["diff_ci95"]
    assert lo <= cited["rate_a"] - cited["rate_b"] <= hi
    assert out["pooled"]["cites_history"]["pairs"] == 48  # every example
    attention = out["pooled"]["attention_top_is_cited"]  # a attends offset 0 (the reference), b offset 1
    assert (attention["rate_a"], attention["rate_b"], attention["a_only"]) == (1.0, 0.0, 2 * len(with_ref))
    a_on_cites = 2 * sum(a_cites[i] for i in with_ref)
    assert out["attention_vs_citing"]["a"] == {
        "attention_on_cites": a_on_cites,
        "attention_on_not": 2 * len(with_ref) - a_on_cites,
        "attention_off_cites": 0,
        "attention_off_not": 0,
    }
    # system b's cells in another folder (re-scored checkpoints): the same pairs, read from there
    other = tmp_path / "rescored"
    (other / "cells").mkdir(parents=True)
    (tmp_path / "cells" / "b").rename(other / "cells" / "b")
    moved = compare(str(tmp_path), "a", "b", data=str(tmp_path / "dataset"), also=[str(other)])
    assert moved["pooled"] == out["pooled"] and moved["cells"]["b"] == str(other / "cells" / "b")
    with pytest.raises(SystemExit, match="no cells/b in"):
        compare(str(tmp_path), "a", "b", data=str(tmp_path / "dataset"))


def test_text_pairs_score_what_the_eval_scores_and_an_untrained_cell_pairs_with_every_seed(tmp_path) -> None:
    import json

    from seller_dist.eval.encoder import TextEncoder
    from seller_dist.eval.text_metrics import text_quality

    records = make_records(12, "test", max_history=4)
    make_dataset(str(tmp_path / "dataset"), 0, 1, splits=("test",), records={"test": records})
    refs = [f"Because you viewed {r.history[-1].title}, {r.item_id} fits." for r in records]
    texts = {
        ("a", 0): [f"Because you viewed {r.history[-1].title}, try it." for r in records],
        ("a", 1): [f"You viewed {r.history[-1].title}; {r.item_id} fits." for r in records],
        ("zero-shot", 0): ["A fine pick for anyone." for _ in records],
    }
    for (system, seed), gen in texts.items():
        write_generations(
            str(tmp_path / "cells" / system / f"seed-{seed}" / "eval" / "generations.jsonl"),
            [
                Generation(r.key, r.user_id, r.item_id, ref, t, [], {})
                for r, ref, t in zip(records, refs, gen, strict=True)
            ],
        )
    # the grid evaluated the untrained system once and recorded seed 1 as a reuse of seed 0
    (tmp_path / "cells" / "zero-shot" / "seed-1").mkdir()
    (tmp_path / "cells" / "zero-shot" / "seed-1" / "result.json").write_text(
        json.dumps({"reused_from": "seed-0"})
    )
    encoder = TextEncoder()
    out = compare(str(tmp_path), "a", "zero-shot", data=str(tmp_path / "dataset"), encoder=encoder)
    assert out["seeds"] == [0, 1]
    # in key order, as the pairs are built
    order = sorted(range(len(records)), key=lambda i: records[i].key)
    pooled_a = [texts[("a", s)][i] for s in (0, 1) for i in order]
    pooled_refs = [refs[i] for _ in (0, 1) for i in order]
    want_a = text_quality(pooled_a, pooled_refs, encoder=encoder)
    want_b = text_quality(
        [texts[("zero-shot", 0)][i] for _ in (0, 1) for i in order], pooled_refs, encoder=encoder
    )
    got = out["text"]["pooled"]
    for m in ("bleu4", "rougeL", "bertscore_f1"):
        assert got[m]["pairs"] == 24
        assert got[m]["mean_a"] == pytest.approx(want_a[m]["mean"], abs=1e-9)
        assert got[m]["mean_b"] == pytest.approx(want_b[m]["mean"], abs=1e-9)
        lo, hi = got[m]["diff_ci95"]
        assert lo <= got[m]["mean_a"] - got[m]["mean_b"] <= hi
    assert got["bleu4"]["mean_a"] > 0 and got["bleu4"]["mean_b"] == 0  # the generic sentence shares no 4-gram
    assert (
        got["bleu4"]["p"] < 0.05
        and got["rougeL"]["a_better"] == 24
        and got["rougeL"]["p"] == sign_test(24, 0)
    )
    assert out["text"]["same_text"]["0"] == {"pairs": 12, "identical": 0, "same_opening": 0}
    again = compare(str(tmp_path), "a", "a", data=str(tmp_path / "dataset"), encoder=encoder)
    assert again["text"]["same_text"]["1"] == {"pairs": 12, "identical": 12, "same_opening": 12}
    seed1 = out["text"]["per_seed"]["1"]["rougeL"]
    assert seed1["mean_a"] == pytest.approx(text_quality(texts[("a", 1)], refs)["rougeL"]["mean"])
    assert "neither_cites_history" not in out["text"]  # every explanation of "a" names a history item

    # "half" names a history item on every third example only: its other pairs with the zero-shot
    # (which names none) are the ones where neither does, scored as the eval scores them
    half = [
        t if i % 3 == 0 else f"{r.item_id} suits you."
        for i, (r, t) in enumerate(zip(records, texts[("a", 0)], strict=True))
    ]
    write_generations(
        str(tmp_path / "cells" / "half" / "seed-0" / "eval" / "generations.jsonl"),
        [
            Generation(r.key, r.user_id, r.item_id, ref, t, [], {})
            for r, ref, t in zip(records, refs, half, strict=True)
        ],
    )
    got = compare(str(tmp_path), "half", "zero-shot", data=str(tmp_path / "dataset"), encoder=encoder)["text"]
    keep = [i for i in order if i % 3]
    uncited = got["neither_cites_history"]
    want = text_quality([half[i] for i in keep], [refs[i] for i in keep], encoder=encoder)
    for m in ("bleu4", "rougeL", "bertscore_f1"):
        assert uncited[m]["pairs"] == len(keep) == 8 and got["pooled"][m]["pairs"] == 12
        # BERTScore's encoder batches pad differently on a subset: equal to float32 rounding
        assert uncited[m]["mean_a"] == pytest.approx(want[m]["mean"], abs=1e-6)
