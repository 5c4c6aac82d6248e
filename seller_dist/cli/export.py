"""`seller-dist export CHECKPOINT --out DIR`: a committed checkpoint -> weights for plain PyTorch."""

from __future__ import annotations

import argparse

from seller_dist.config import StorageConfig
from seller_dist.train.export import committed_checkpoint_url, export


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="a committed checkpoint URL (…/checkpoints/step-XXXXXXXX) or a run's "
        "checkpoints folder (the newest committed one is taken)",
    )
    p.add_argument("--out", required=True, help="local output folder")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (default: $AWS_ENDPOINT_URL)")


def run(args: argparse.Namespace) -> int:
    cfg = StorageConfig(endpoint_url=args.endpoint_url)
    url = committed_checkpoint_url(args.checkpoint, cfg)
    out = export(url, args.out, cfg)
    print(f"exported {url} -> {out}")
    return 0
