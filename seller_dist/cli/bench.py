"""`seller-dist bench data|train|eval|prep|gpu`: the benchmarks' arguments, parsed into each bench
module's typed options for its `run(options)`. The defaults are the dataclasses' alone (an option not given is left out:
argparse.SUPPRESS), so building the parser imports no benchmark module; `bench gpu` runs on a GPU
machine without Ray, which neither this module nor seller_dist.bench.gpu imports."""

from __future__ import annotations

import argparse
import importlib

from seller_dist.cli.options import add_override_argument, options_from

# name -> (module, its options dataclass, help)
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "data": (
        "seller_dist.bench.data",
        "BenchDataOptions",
        "records/s of the shard stream (local disk and S3: local moto or --s3-root) vs raw tar reads",
    ),
    "train": ("seller_dist.bench.train", "BenchTrainOptions", "training step throughput and MFU"),
    "eval": ("seller_dist.bench.eval", "BenchEvalOptions", "generation / evaluation throughput"),
    "prep": (
        "seller_dist.bench.prep",
        "BenchPrepOptions",
        "prep events/s and peak RSS per engine, size and format (event logs)",
    ),
    "gpu": (
        "seller_dist.bench.gpu",
        "GpuBenchOptions",
        "one GPU: training tokens/s and MFU at 0.95B, --generate decoding, --suite every GPU benchmark",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (_, _, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, argument_default=argparse.SUPPRESS)
        ARGUMENTS[name](p)


def run(args: argparse.Namespace) -> int:
    module_name, options_name, _ = BENCHMARKS[args.benchmark]
    module = importlib.import_module(module_name)
    return int(module.run(options_from(getattr(module, options_name), args)) or 0)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, help="synthetic users (about 16 train records each)")
    p.add_argument("--shard-records", type=int, help="records per shard")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--shuffle-buffer", type=int)
    p.add_argument("--workers", help="comma-separated loader worker counts to measure")
    p.add_argument("--repeats", type=int, help="epochs timed per measurement (median reported)")
    p.add_argument(
        "--tokenizer",
        help="local HF tokenizer dir for the collate runs "
        "(default: train a small byte-level BPE on the dataset's text)",
    )
    p.add_argument(
        "--length-buckets",
        type=int,
        help="data.length_buckets to compare with 0 in the padding measurement (tokens, not time)",
    )
    p.add_argument("--no-s3", action="store_true", help="skip the S3 measurements")
    p.add_argument(
        "--s3-root",
        metavar="s3://BUCKET/PREFIX",
        help="measure YOUR object store: the dataset is copied under this prefix (which must not hold "
        "a dataset; the copy stays) and streamed from there, endpoint and credentials from the "
        "environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); default: a local moto server",
    )
    p.add_argument("--work-dir", help="where to prepare the dataset (default: a temp dir)")
    p.add_argument("--out", help="the JSON artifact (default: outputs/bench/bench-data-<UTC time>.json)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="train YAML (default: the embedded demo config)")
    add_override_argument(
        p,
        "--set data.batch_size=16 (data.manifest / model.llm_path given here are used instead of the prepared ones)",
    )
    p.add_argument("--modes", help="comma-separated: plain, deepspeed, ray")
    p.add_argument("--workers", help="comma-separated worker counts (plain runs 1 only)")
    p.add_argument("--warmup", type=int, help="steps run before measuring")
    p.add_argument("--steps", type=int, help="measured steps")
    p.add_argument("--repeats", type=int, help="rounds over all modes (median reported)")
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="an extra deepspeed run with DeepSpeed config overrides, e.g. "
        "persist:zero_optimization.stage3_param_persistence_threshold=1000000000",
    )
    p.add_argument(
        "--chip",
        choices=["h100", "h200", "cpu"],
        help="peak for MFU (default: "
        "h100 on a GPU, else cpu = a measured single-thread fp32 matmul rate per worker)",
    )
    p.add_argument("--peak-tflops", type=float, help="peak per worker device (overrides --chip)")
    p.add_argument("--users", type=int, help="synthetic users for the prepared dataset")
    p.add_argument("--llm-hidden", type=int, help="hidden size of the frozen LLM (128; --gpu 2048)")
    p.add_argument("--llm-layers", type=int, help="layers of the frozen LLM (2; --gpu 16)")
    p.add_argument("--llm-heads", type=int, help="attention heads (hidden / 32; --gpu 32)")
    p.add_argument("--llm-intermediate", type=int, help="MLP size (Llama default; --gpu 5632)")
    p.add_argument(
        "--gpu",
        action="store_true",
        help="one GPU: the real loop (deepspeed) against its step alone (strategy), bf16, ~1B frozen LLM",
    )
    p.add_argument("--deepcompile", action="store_true", help="with --gpu: DeepSpeed DeepCompile (zero3)")
    p.add_argument("--stream-batches", type=int, help="batches timed for the stream rate")
    p.add_argument("--work-dir", help="dataset, LLM and run folders")
    p.add_argument("--out", help="the JSON artifact (default: outputs/bench/bench-train-<UTC time>.json)")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="prepared dataset (default: synthetic, prepared in --work)")
    p.add_argument("--llm", help="frozen LLM dir (default: a random-weight Llama in --work)")
    p.add_argument("--checkpoint", help="trained weights (default: a fresh SELLER init)")
    p.add_argument("--work", help="where default inputs are prepared and reused")
    p.add_argument("--users", type=int)
    p.add_argument("--llm-hidden", type=int)
    p.add_argument("--llm-layers", type=int)
    p.add_argument("--examples", type=int, help="test examples generated per variant")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--repeats", type=int, help="timed passes per variant (best is kept)")
    p.add_argument(
        "--decodes",
        help="eval.generation.decode values timed as seller (dynamic) and seller_static (static)",
    )
    p.add_argument("--out", help="the JSON artifact (default: outputs/bench/bench-eval-<UTC time>.json)")


def add_prep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", help="comma-separated event counts (default 250000,1000000,4000000)")
    p.add_argument("--tiny", action="store_true", help="sizes 2000,8000 and 200 items (tests, smoke runs)")
    p.add_argument("--engines", help="comma-separated: local, ray")
    p.add_argument("--formats", help="comma-separated: csv, parquet")
    p.add_argument("--users", type=int, help="users in the log (default: events / 10)")
    p.add_argument("--items", type=int, help="items in the catalog (default 5000)")
    p.add_argument("--files", type=int, help="split each log into K files (default: ONE big file)")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-history", type=int)
    p.add_argument("--ray-address", help="run engine=ray on this cluster (default: a local Ray)")
    add_override_argument(p, "--set partition_max_events=5000", "prep_set", "a prep setting of every run")
    p.add_argument("--baseline-eps", type=float, help="events/s per CPU baseline")
    p.add_argument("--timeout", type=float, help="seconds before one prep run is killed")
    p.add_argument("--workdir", help="generated logs (cached), outputs, prep logs")
    p.add_argument("--keep-outputs", action="store_true", help="keep each run's prepared dataset")
    p.add_argument("--out", help="the JSON artifact (default: outputs/bench/bench-prep-<UTC time>.json)")


def add_gpu_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny LLM, a few steps")
    p.add_argument("--hidden", type=int, help="the frozen LLM's hidden size (2048: 0.95B with the rest)")
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--intermediate", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--micro-batches", help="micro-batch sizes to time (OOM ones skipped)")
    p.add_argument(
        "--variants",
        help="eager: plain PyTorch (TorchStrategy) as the model trains; full_logits: the LM head over every position "
        "(the old path); compile: torch.compile of each frozen decoder layer (the two largest sizes); "
        "checkpointing: activation checkpointing in the frozen LLM; deepspeed: the training job's "
        "DeepSpeedStrategy (ZeRO-3, one rank); deepspeed_compile: plus engine.compile() "
        "deepspeed_replicated[_compile]: train.llm_layout=replicated [+ train.compile_llm]; "
        "deepspeed_deepcompile: ZeRO-3 with DeepSpeed's DeepCompile (train.deepcompile, CUDA only) "
        "(default: all; --tiny: eager,full_logits,checkpointing,deepspeed)",
    )
    p.add_argument("--one-micro-batch", type=int, help="size for the single-size variants")
    p.add_argument("--no-check", action="store_true", help="skip the CUDA vs CPU consistency check")
    p.add_argument("--d-model", type=int)
    p.add_argument("--soft-tokens", type=int)
    p.add_argument("--experts", type=int)
    p.add_argument("--expert-hidden", type=int)
    p.add_argument("--attn", help="attn_implementation of the LLM (sdpa, eager, ...)")
    p.add_argument("--warmup", type=int)
    p.add_argument("--seconds", type=float, help="measured seconds per micro-batch size")
    p.add_argument("--min-steps", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--chip", choices=["h100", "h200"], help="peak for MFU (default h200)")
    p.add_argument("--peak-tflops", type=float, help="overrides --chip")
    p.add_argument("--out", help="write the JSON result here")
    g = p.add_argument_group("generation (--generate: the eval job's decoding, LLM scale)")
    g.add_argument("--generate", action="store_true", help="time decoding variants instead of training")
    g.add_argument("--gen-batch-sizes")
    g.add_argument("--prompt-len", type=int, help="prompt positions (left-padded)")
    g.add_argument("--new-tokens", type=int)
    g.add_argument(
        "--gen-variants", help="default: all of bench.eval.DECODE_VARIANTS (CPU: not static_cudagraphs)"
    )
    g.add_argument("--gen-repeats", type=int, help="timed calls per variant (best kept)")
    g.add_argument("--compile-backend", help="torch.compile backend of static_compiled")
    g.add_argument("--deadline-seconds", type=float, help="skip variants started later")
    s_ = p.add_argument_group(
        "suite (--suite: every GPU benchmark in one run, one JSON; cluster/gpu_bench.sh)"
    )
    s_.add_argument("--suite", action="store_true", help="run the sections below, each in its own process")
    s_.add_argument("--budget", type=float, help="seconds for the whole suite")
    s_.add_argument("--sections", help="comma-separated, in order (default: all, in priority order)")
    s_.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        help="sections in this process, without timeouts (default: with --tiny only)",
    )


ARGUMENTS = {
    "data": add_data_arguments,
    "train": add_train_arguments,
    "eval": add_eval_arguments,
    "prep": add_prep_arguments,
    "gpu": add_gpu_arguments,
}
