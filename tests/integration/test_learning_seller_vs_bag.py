"""The learning claim of the evaluation issue, on a small but real training job, as far as it holds
over seeds: on the synthetic source (whose reference cites the MOST RECENT history event sharing the
target's category or brand), SELLER's fusion attention finds the reference's event far more often
than the order-free `bag` baseline's, and SELLER's explanations cite that event at least about as
often as `bag`'s.

Everything is real and seeded: the packaged synthetic prep, `bootstrap-llm`, one DeepSpeed ZeRO-3
gloo rank per system (the two in parallel), greedy generation of the whole test split (300
examples, 270 with a cited event) through the eval job's generator, and the eval job's scoring.
Same code path as the research harness tests/learning_seller_vs_bag.py, which ran this
configuration on seeds 0, 1 and 2 (docs/evaluation.md). The bounds below hold on every one of those
seeds; they are not fitted to the single seed run here. About 4 minutes on 2 cores.

Not asserted, because it did not hold on every seed: SELLER ahead on the explanations' own
citations (+0.118, +0.056, -0.037 on seeds 0-2) and on retrieval MRR (+0.044, -0.024, -0.274).
"""

from __future__ import annotations

import pytest

from tests.learning_seller_vs_bag import run_seed

pytestmark = pytest.mark.slow

SEED = 0
STEPS = 600  # per system
BOOTSTRAP_STEPS = 600
# SELLER - bag on seeds 0, 1, 2: attention +0.448, +0.437, +0.448; citations +0.118, +0.056, -0.037
ATTENTION_MARGIN = 0.30  # share whose top fusion-attention event is the reference's event
CITATION_NON_INFERIORITY = -0.05  # share of explanations that cite the reference's event


def test_seller_attention_finds_the_most_recent_related_event_and_bag_cannot(tmp_path):
    s = run_seed(tmp_path, SEED, STEPS, BOOTSTRAP_STEPS)
    seller, bag = s["seller"], s["bag"]
    assert seller["attention_top_is_cited"] >= bag["attention_top_is_cited"] + ATTENTION_MARGIN, s
    assert seller["cites_reference_event"] >= bag["cites_reference_event"] + CITATION_NON_INFERIORITY, s
