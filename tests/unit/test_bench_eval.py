"""`seller-dist bench eval` on a tiny dataset and LLM: every variant really generates every example,
Hugging Face `generate` writes the same greedy tokens as the eval job's generation loop, and the
JSON holds the ratios."""

from __future__ import annotations

import json

from seller_dist.cli import main
from tests.train_helpers import prep_small


def test_eval_benchmark_runs_every_variant_and_agrees_with_hf_generate(tmp_path, tiny_llm_dir, capsys):
    data = str(tmp_path / "data")
    prep_small(data)
    out = tmp_path / "eval.json"
    args = ["bench", "eval", "--data", data, "--llm", tiny_llm_dir, "--examples", "8"]
    args += ["--batch-sizes", "1,4", "--max-new-tokens", "6", "--repeats", "1", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    rows = {(v["variant"], v["batch_size"]): v for v in result["variants"]}
    assert set(rows) == {
        ("seller", 1),
        ("hf_loop", 1),
        ("seller_static", 1),
        ("seller", 4),
        ("hf_batched", 4),
        ("seller_static", 4),
    }
    assert all(v["examples"] == 8 and v["explanations_per_s"] > 0 for v in rows.values())
    # greedy decoding of the same model: HF generate and the static cache write exactly our tokens
    assert rows[("hf_loop", 1)]["identical_to_seller"] == 8
    assert rows[("hf_batched", 4)]["identical_to_seller"] == 8
    assert rows[("seller_static", 1)]["identical_to_seller"] == 8
    assert rows[("seller_static", 4)]["identical_to_seller"] == 8
    assert set(result["ratios"]) == {
        "seller_b1_over_hf_same_batch",
        "seller_b1_over_hf_loop",
        "seller_b4_over_hf_same_batch",
        "seller_b4_over_hf_loop",
        "seller_static_b1_over_hf_same_batch",
        "seller_static_b4_over_hf_same_batch",
    }
    assert result["provenance"]["commit"] and result["provenance"]["machine"]["cpus"]
    assert "| seller | 4 |" in capsys.readouterr().out
