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
