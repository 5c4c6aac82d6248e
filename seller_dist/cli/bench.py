"""`seller-dist bench data|train|eval|prep`: the throughput benchmarks' arguments; each benchmark
module's `run(args)` measures and writes its JSON artifact (seller_dist.bench)."""

from __future__ import annotations

import argparse
import importlib

from seller_dist.cli.options import add_override_argument

BENCHMARKS: dict[str, tuple[str, str]] = {
    "data": ("seller_dist.bench.data", "records/s of the shard stream (local disk and S3) vs raw tar reads"),
    "train": ("seller_dist.bench.train", "training step throughput and MFU"),
    "eval": ("seller_dist.bench.eval", "generation / evaluation throughput"),
    "prep": ("seller_dist.bench.prep", "prep events/s and peak RSS per engine, size and format (event logs)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text)
        ARGUMENTS[name](p)
        p.set_defaults(bench_module=module)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args.bench_module).run(args) or 0)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=1200, help="synthetic users (about 16 train records each)")
    p.add_argument("--shard-records", type=int, default=2000, help="records per shard")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shuffle-buffer", type=int, default=256)
    p.add_argument("--workers", default="1,2", help="comma-separated loader worker counts to measure")
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per measurement (median reported)")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="local HF tokenizer dir for the collate runs "
        "(default: train a small byte-level BPE on the dataset's text)",
    )
    p.add_argument(
        "--length-buckets",
        type=int,
        default=64,
        help="data.length_buckets to compare with 0 in the padding measurement (tokens, not time)",
    )
    p.add_argument("--no-s3", action="store_true", help="skip the S3 measurements")
    p.add_argument("--work-dir", default=None, help="where to prepare the dataset (default: a temp dir)")
    p.add_argument(
        "--out", default=None, help="the JSON artifact (default: outputs/bench/bench-data-<UTC time>.json)"
    )


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="train YAML (default: the embedded demo config)")
    add_override_argument(
        p,
        "--set data.batch_size=16 (data.manifest / model.llm_path given here are used instead of the prepared ones)",
    )
    p.add_argument("--modes", default="plain,deepspeed,ray", help="comma-separated: plain, deepspeed, ray")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (plain runs 1 only)")
    p.add_argument("--warmup", type=int, default=3, help="steps run before measuring")
    p.add_argument("--steps", type=int, default=20, help="measured steps")
    p.add_argument("--repeats", type=int, default=1, help="rounds over all modes (median reported)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="an extra deepspeed run with DeepSpeed config overrides, e.g. "
        "persist:zero_optimization.stage3_param_persistence_threshold=1000000000",
    )
    p.add_argument(
        "--chip",
        choices=["h100", "h200", "cpu"],
        default=None,
        help="peak for MFU (default: "
        "h100 on a GPU, else cpu = a measured single-thread fp32 matmul rate per worker)",
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak per worker device (overrides --chip)"
    )
    p.add_argument("--users", type=int, default=300, help="synthetic users for the prepared dataset")
    p.add_argument(
        "--llm-hidden", type=int, default=None, help="hidden size of the frozen LLM (128; --gpu 2048)"
    )
    p.add_argument("--llm-layers", type=int, default=None, help="layers of the frozen LLM (2; --gpu 16)")
    p.add_argument("--llm-heads", type=int, default=None, help="attention heads (hidden / 32; --gpu 32)")
    p.add_argument("--llm-intermediate", type=int, default=None, help="MLP size (Llama default; --gpu 5632)")
    p.add_argument(
        "--gpu",
        action="store_true",
        help="one GPU: the real loop (deepspeed) against its step alone (strategy), bf16, ~1B frozen LLM",
    )
    p.add_argument("--deepcompile", action="store_true", help="with --gpu: DeepSpeed DeepCompile (zero3)")
    p.add_argument("--stream-batches", type=int, default=200, help="batches timed for the stream rate")
    p.add_argument("--work-dir", default="outputs/bench/train", help="dataset, LLM and run folders")
    p.add_argument(
        "--out", default=None, help="the JSON artifact (default: outputs/bench/bench-train-<UTC time>.json)"
    )


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="prepared dataset (default: synthetic, prepared in --work)")
    p.add_argument("--llm", default=None, help="frozen LLM dir (default: a random-weight Llama in --work)")
    p.add_argument("--checkpoint", default=None, help="trained weights (default: a fresh SELLER init)")
    p.add_argument("--work", default=".cache/bench", help="where default inputs are prepared and reused")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--llm-hidden", type=int, default=128)
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--examples", type=int, default=64, help="test examples generated per variant")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per variant (best is kept)")
    p.add_argument(
        "--decodes",
        default="dynamic,static",
        help="eval.generation.decode values timed as seller (dynamic) and seller_static (static)",
    )
    p.add_argument(
        "--out", default=None, help="the JSON artifact (default: outputs/bench/bench-eval-<UTC time>.json)"
    )


def add_prep_arguments(p: argparse.ArgumentParser) -> None:
    from seller_dist.bench.prep import BASELINE_EVENTS_PER_S

    p.add_argument(
        "--sizes", default=None, help="comma-separated event counts (default 250000,1000000,4000000)"
    )
    p.add_argument("--tiny", action="store_true", help="sizes 2000,8000 and 200 items (tests, smoke runs)")
    p.add_argument("--engines", default="local,ray", help="comma-separated: local, ray")
    p.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    p.add_argument("--users", type=int, default=None, help="users in the log (default: events / 10)")
    p.add_argument("--items", type=int, default=None, help="items in the catalog (default 5000)")
    p.add_argument("--files", type=int, default=1, help="split each log into K files (default: ONE big file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument(
        "--ray-address", default=None, help="run engine=ray on this cluster (default: a local Ray)"
    )
    p.add_argument(
        "--set",
        dest="prep_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a prep setting for every run (repeatable), e.g. partition_max_events=5000",
    )
    p.add_argument(
        "--baseline-eps", type=float, default=BASELINE_EVENTS_PER_S, help="events/s per CPU baseline"
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before one prep run is killed")
    p.add_argument(
        "--workdir", default=".cache/bench/prep", help="generated logs (cached), outputs, prep logs"
    )
    p.add_argument("--keep-outputs", action="store_true", help="keep each run's prepared dataset")
    p.add_argument(
        "--out", default=None, help="the JSON artifact (default: outputs/bench/bench-prep-<UTC time>.json)"
    )


ARGUMENTS = {
    "data": add_data_arguments,
    "train": add_train_arguments,
    "eval": add_eval_arguments,
    "prep": add_prep_arguments,
}
