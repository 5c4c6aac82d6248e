"""`seller-dist demo`: the README's end-to-end run on the embedded synthetic default, offline.

Stages (each prints what it did): prepare the synthetic dataset with the packaged config; stream
the train split back through the same rank loader the training workers use, as `--ranks` ranks, and
check that every record arrived exactly once with equal batch counts per rank; bootstrap a small LLM
on the dataset's text (no hub here); train SELLER with Ray Train + DeepSpeed ZeRO-3 on 2 CPU workers
(experts split over both) with the packaged train config; export the trainable weights.
`--stages data` stops after the stream check.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from seller_dist import storage
from seller_dist.config import PrepConfig, StreamConfig
from seller_dist.config_loader import load_config


def default_prep_config_path() -> Path:
    return Path(str(resources.files("seller_dist") / "configs" / "prep_synthetic.yaml"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/demo", help="where the demo writes (local path or s3:// URL)")
    p.add_argument("--ranks", type=int, default=2, help="ranks to split the stream across")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--stages", choices=["data", "all"], default="all", help="data: stop after the stream check"
    )
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a prep config key, e.g. --set source_options.num_users=1000",
    )


def stream_back(data_url: str, ranks: int, batch_size: int, split: str = "train") -> dict[str, Any]:
    """One epoch of `split` through RankLoader for each rank; asserts the exactly-once contract."""
    from seller_dist.data.stream import RankLoader

    seen: Counter = Counter()
    per_rank = []
    for rank in range(ranks):
        cfg = StreamConfig(manifest=data_url, split=split, batch_size=batch_size, seed=0)
        loader = RankLoader.from_config(cfg, rank=rank, world_size=ranks)
        batches = 0
        hist_len = 0
        n_real = 0
        for batch in loader.epoch_iter():
            batches += 1
            for rec, pad in zip(batch.records, batch.pad, strict=True):
                if not pad:
                    seen[rec.key] += 1
                    n_real += 1
                    hist_len += len(rec.history)
        per_rank.append(
            {"rank": rank, "batches": batches, "records": n_real, "mean_history": hist_len / max(1, n_real)}
        )
    dupes = [k for k, n in seen.items() if n != 1]
    if dupes or len({r["batches"] for r in per_rank}) != 1:
        raise RuntimeError(f"stream contract broken: duplicates={dupes[:3]} per_rank={per_rank}")
    return {"records": sum(seen.values()), "per_rank": per_rank}


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    data_url = storage.join(args.out, "data")
    prep_cfg = load_config(
        PrepConfig, default_prep_config_path(), [f"output={data_url}", "overwrite=true", *args.overrides]
    )
    from data_prep.pipeline import run_prep

    n_stages = 2 if args.stages == "data" else 5
    print(f"[demo] 1/{n_stages} prepare synthetic data -> {data_url}")
    manifest = run_prep(prep_cfg)
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    print(f"[demo]     records per split: {counts}; items: {manifest['items']['count']}")

    print(f"[demo] 2/{n_stages} stream the train split back across {args.ranks} ranks")
    summary = stream_back(data_url, args.ranks, args.batch_size)
    if summary["records"] != counts["train"]:
        raise RuntimeError(f"streamed {summary['records']} train records, manifest says {counts['train']}")
    for r in summary["per_rank"]:
        print(
            f"[demo]     rank {r['rank']}: {r['batches']} batches, {r['records']} records, "
            f"mean history length {r['mean_history']:.1f}"
        )
    print("[demo]     every train record streamed exactly once, equal batch counts per rank")
    if args.stages == "all":
        train_and_export(args, data_url)
    print(f"[demo] done in {time.time() - t0:.1f}s")
    return 0


def train_and_export(args: argparse.Namespace, data_url: str) -> None:
    """Stages 3-5: bootstrap the frozen LLM, train on 2 Ray workers, export for plain PyTorch."""
    from seller_dist.cli import main as cli_main
    from seller_dist.config import TrainConfig
    from seller_dist.train import checkpoint as ck
    from seller_dist.train.driver import default_config_path, train
    from seller_dist.train.export import export

    llm_dir = str(Path(args.out) / "llm")
    print(f"[demo] 3/5 bootstrap a small LLM on the dataset's text -> {llm_dir}")
    boot = ["bootstrap-llm", "--data", data_url, "--out", llm_dir, "--steps", "100", "--hidden", "64"]
    if cli_main([*boot, "--vocab-size", "1000"]) != 0:
        raise RuntimeError("bootstrap-llm failed")

    print(f"[demo] 4/5 train SELLER: Ray Train, 2 CPU workers, ZeRO-3, ep_size 2, {args.train_steps} steps")
    overrides = [
        f"data.manifest={data_url}",
        f"model.llm_path={llm_dir}",
        f"storage_path={storage.join(args.out, 'runs')}",
        f"run_name=demo-{int(time.time())}",
        f"max_steps={args.train_steps}",
        "checkpoint.every_steps=0",
        f"logging.wandb_dir={storage.join(args.out, 'wandb')}",
    ]
    cfg = load_config(TrainConfig, default_config_path(), overrides)
    pre, _ = train(cfg)
    latest = ck.latest_committed(pre.checkpoints_root, cfg.storage, verify=False)
    if latest is None:
        raise RuntimeError(f"training left no committed checkpoint under {pre.checkpoints_root}")
    state = ck.Checkpoint.open(latest.url, cfg.storage).load_json(ck.TRAIN_STATE_FILE)
    print(f"[demo]     committed checkpoint {latest.url} (step {state.get('step')})")

    out_dir = Path(args.out) / "export"
    print(f"[demo] 5/5 export trainable weights -> {out_dir}")
    export(latest.url, out_dir, cfg.storage)
