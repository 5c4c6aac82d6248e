"""The learning claim of the evaluation issue, on a small but real training job: on the synthetic
source (whose reference cites the MOST RECENT history event sharing the target's category or brand),
SELLER beats the order-free `bag` baseline on sequence grounding.

Everything is real and seeded: the packaged synthetic prep, `bootstrap-llm`, one DeepSpeed ZeRO-3
gloo rank per system (the two in parallel), greedy generation of the whole test split (300
examples, 270 with a cited event) through the eval job's generator, and the eval job's scoring.
Same code path as the research harness tests/learning_seller_vs_bag.py, which ran this
configuration on seeds 0, 1 and 2 (docs/evaluation.md); the margins hold on every seed measured,
they are not fitted to the one run here. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import pytest

from tests.learning_seller_vs_bag import run_seed

pytestmark = pytest.mark.slow

SEED = 0
STEPS = 600  # per system
BOOTSTRAP_STEPS = 600
# SELLER - bag, at least (smallest seen over seeds 0-2: docs/evaluation.md):
GROUNDING_MARGIN = 0.04  # share of explanations that cite the reference's event (cites_reference_event)
ATTENTION_MARGIN = 0.30  # share whose top fusion-attention event is that event
# Retrieval utility (MRR of the target among 100 items, ranked by the explanation's embedding) is NOT
# a SELLER win at this scale: +0.044 on seed 0, -0.024 on seed 1. Guarded against regressions only:
RETRIEVAL_NON_INFERIORITY = -0.05


def test_seller_beats_bag_on_sequence_grounding(tmp_path):
    s = run_seed(tmp_path, SEED, STEPS, BOOTSTRAP_STEPS)
    seller, bag = s["seller"], s["bag"]
    assert seller["cites_reference_event"] >= bag["cites_reference_event"] + GROUNDING_MARGIN, s
    assert seller["attention_top_is_cited"] >= bag["attention_top_is_cited"] + ATTENTION_MARGIN, s
    assert seller["mrr"] >= bag["mrr"] + RETRIEVAL_NON_INFERIORITY, s
