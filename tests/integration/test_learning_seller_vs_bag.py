"""The learning claim of the evaluation issue, on a small but real training job, as far as it holds
over seeds: on the synthetic source (whose reference cites the MOST RECENT history event sharing the
target's category or brand), SELLER's fusion attention finds the reference's event far more often
than the order-free `bag` baseline's, SELLER's generated explanations cite that event far more often
than `bag`'s, the exact simulated user (the generator's own latent taste, which responds most to an
explanation tied to the user's latest related action) accepts SELLER's recommendations more often,
and SELLER's explanations are about as useful for retrieving the target.

Everything is real and seeded: the packaged synthetic prep, `bootstrap-llm`, one DeepSpeed ZeRO-3
gloo rank per system (the two in parallel), greedy generation of the whole test split (300
examples, 270 with a cited event) through the eval job's generator, and the eval job's scoring.
Same code path as the research harness tests/learning_seller_vs_bag.py, which ran this
configuration on seeds 0, 1 and 2 (docs/evaluation.md). The bounds below hold on every one of those
seeds with room to spare; they are not fitted to the single seed run here. About 4 minutes on 2 cores.

Retrieval is NOT shown better, and cannot be from reading the order: perfect explanations that cite
another related event retrieve the target as well as the reference or better (the oracles of
tests/unit/test_eval_oracles.py, docs/evaluation.md "Headroom for order"). SELLER's MRR was
0.017-0.025 below `bag`'s on seeds 0-2; the test only bounds the loss.
"""

from __future__ import annotations

import pytest

from tests.learning_seller_vs_bag import run_seed

pytestmark = pytest.mark.slow

SEED = 0
STEPS = 600  # per system
BOOTSTRAP_STEPS = 600
# SELLER - bag on seeds 0, 1, 2: attention +0.511, +0.430, +0.467; citations +0.311, +0.285, +0.278;
# exact-simulator acceptance +0.039, +0.039, +0.034; retrieval MRR -0.020, -0.025, -0.017
ATTENTION_MARGIN = 0.30  # share whose top fusion-attention event is the reference's event
CITATION_MARGIN = 0.15  # share of generated explanations that cite the reference's event
ACCEPTANCE_MARGIN = 0.02  # exact simulator: P(accept) of the target shown with the explanation
MRR_NON_INFERIORITY = -0.06  # retrieval MRR of the generated explanations (target among 100)


def test_seller_grounds_its_explanations_in_the_most_recent_related_event_and_bag_cannot(tmp_path):
    s = run_seed(tmp_path, SEED, STEPS, BOOTSTRAP_STEPS)
    seller, bag = s["seller"], s["bag"]
    assert seller["attention_top_is_cited"] >= bag["attention_top_is_cited"] + ATTENTION_MARGIN, s
    assert seller["cites_reference_event"] >= bag["cites_reference_event"] + CITATION_MARGIN, s
    assert seller["exact_acceptance"] >= bag["exact_acceptance"] + ACCEPTANCE_MARGIN, s
    assert seller["mrr"] >= bag["mrr"] + MRR_NON_INFERIORITY, s
