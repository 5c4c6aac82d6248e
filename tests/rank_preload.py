"""Imported by the fork server of tests/ranks.py only: what every test rank would import for itself."""

from __future__ import annotations

import contextlib
import importlib
import os

RANK_PRELOAD = (
    "torch",
    "torch.distributed",
    "torch.distributed.tensor",
    "torch._dynamo",
    "torch._inductor.compile_fx",
    "transformers",
    "transformers.modeling_utils",
    "transformers.activations",
    "transformers.generation.utils",
    "transformers.integrations.deepspeed",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.llama.modeling_llama",
    "deepspeed",
    "deepspeed.runtime.engine",
    "deepspeed.runtime.zero.stage3",
    "deepspeed.runtime.zero.muon.muon_optimizer",
    "deepspeed.moe.layer",
    "accelerate",
    "boto3",
    "s3fs",
    "webdataset",
    "seller_dist.train.trainer",
    "seller_dist.train.worker",
    "seller_dist.train.validation",
    "seller_dist.data.prefetch",
    "seller_dist.data.split_batches",
    "tests.train_helpers",
)

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed picks its accelerator when imported
for _name in RANK_PRELOAD:
    with contextlib.suppress(ImportError):  # an optional part missing: a rank imports what it needs
        importlib.import_module(_name)
