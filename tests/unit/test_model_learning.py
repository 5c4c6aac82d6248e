"""The full model learns explanations through its soft prompts; the text-only baseline cannot.

Explanations in the synthetic batches depend on the target item, its attribute and the most recent
history event, none of which the text prompt carries. A fixed number of steps, not timed.
"""

from __future__ import annotations

import pytest
import torch

from seller_dist.config import ModelConfig
from seller_dist.model.llm import FrozenLLM
from seller_dist.model.seller import SellerModel
from seller_dist.model.synthetic import synthetic_batch
from seller_dist.model.vocab import ModelVocab
from tests.tiny_llm import token_ids_of

VOCAB = ModelVocab(num_items=20, attribute_sizes=[4, 3], text_dim=8)


def mean_loss(model, moe, batches) -> float:
    model.eval()
    with torch.no_grad():
        return sum(float(model(b, moe=moe)["lm_loss"]) for b in batches) / len(batches)


@pytest.mark.slow
def test_full_model_learns_far_below_the_text_only_baseline(tiny_llm_dir):
    torch.set_num_threads(1)
    llm = FrozenLLM.from_pretrained(tiny_llm_dir)
    ids = token_ids_of(llm)
    batches = [synthetic_batch(VOCAB, ids, 8, 32, 6, seed=s) for s in range(8)]  # 256 examples
    results = {}
    for adapter in ("moe", "none"):
        torch.manual_seed(0)
        cfg = ModelConfig(
            adapter=adapter,
            d_model=32,
            num_heads=4,
            num_layers=1,
            dropout=0.0,
            expert_hidden=64,
            num_experts=4,
        )
        model = SellerModel(cfg, VOCAB, llm)
        moe = model.make_moe() if adapter == "moe" else None
        params = [p for _, p in model.trainable_named_parameters()] + (list(moe.parameters()) if moe else [])
        start = mean_loss(model, moe, batches)
        if params:
            opt = torch.optim.Adam(params, lr=1e-2)
            model.train()
            for step in range(200):
                out = model(batches[step % len(batches)], moe=moe)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
        results[adapter] = (start, mean_loss(model, moe, batches))
    none_start, none_end = results["none"]
    assert none_end == pytest.approx(none_start)  # nothing to train
    moe_start, moe_end = results["moe"]
    assert moe_end < none_end - 2.0, results
    assert moe_end < moe_start - 2.0, results
