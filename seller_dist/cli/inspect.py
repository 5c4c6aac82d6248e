"""`seller-dist inspect URL`: read a prepared dataset back in full and print its summary."""

from __future__ import annotations

import argparse
import json
import sys

from seller_dist.config import StorageConfig
from seller_dist.data import shards
from seller_dist.data.inspect import format_summary, summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="dataset root (local path or s3://...) holding manifest.json")
    parser.add_argument("--endpoint-url", default=None, help="S3 endpoint (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    cfg = StorageConfig(endpoint_url=args.endpoint_url)
    try:
        summary = summarize(args.url, cfg)
    except (FileNotFoundError, ValueError, shards.ShardError) as e:
        print(f"inspect failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
