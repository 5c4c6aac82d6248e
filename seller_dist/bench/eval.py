"""`seller-dist bench eval`: explanations/s of the eval job's batched generation against a plain
`transformers` `generate` loop of the same model, measured side by side in one run.

What is compared, on the same examples, the same frozen LLM and the same trained weights:
- `seller`: seller_dist.eval.generate.ExplanationGenerator.generate_batch, the code the eval workers
  run (collate, soft prompts, our KV-cache greedy loop, decode, supporting events) at batch size B;
- `hf_batched`: the same collated batch and soft prompts, then Hugging Face `model.generate(
  inputs_embeds=..., do_sample=False)` at batch size B, decoded the same way;
- `hf_loop`: Hugging Face `generate` one example at a time: what a hand-written eval loop does.
Both HF variants also report how many explanations are token-identical to ours (greedy decoding of
the same model should agree; a difference means a masking or position bug on one side).
Generation length follows the model (eos), so all three produce the same number of tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from seller_dist.config import GenerationOptions, ModelConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--out", default="outputs/bench/eval.json")


def fresh_weights(data: str, llm: str) -> Any:
    """TrainedWeights of a SELLER initialised for the dataset (the demo's model config): speed does
    not depend on what the adapter learned."""
    from seller_dist.data.shards import Manifest
    from seller_dist.model.llm import FrozenLLM
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.vocab import ModelVocab
    from seller_dist.train.export import MOE_PREFIX, TrainedWeights

    vocab = ModelVocab.from_manifest(Manifest.load(data).data)
    cfg = ModelConfig(llm_path=llm, num_experts=4, top_k=2, dropout=0.0)
    torch.manual_seed(0)
    model = SellerModel(cfg, vocab, FrozenLLM.from_pretrained(llm))
    weights = dict(model.trainable_state_dict())
    weights.update({MOE_PREFIX + k: v for k, v in model.make_moe().state_dict().items()})
    return TrainedWeights("fresh-init", None, cfg, dataclasses.asdict(vocab), weights)


def hf_generate(gen: Any, records: list, max_new_tokens: int) -> list[list[int]]:
    """Hugging Face generate on the same prompts + soft prompts (new token ids per row, to eos)."""
    batch = gen.collate(records)
    inputs = {k: v.to(gen.device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "pad"}
    model = gen.seller.model
    pointer = "hard" if gen.gen.pointer == "hard" else None  # as SellerModel.generate points
    soft, _, _ = model.soft_prompts(inputs, gen.seller.moe, pointer)
    embeds = model.llm.embed_with_soft(inputs["input_ids"], inputs["soft_mask"].bool(), soft)
    out = model.llm.model.generate(
        inputs_embeds=embeds,
        attention_mask=inputs["attention_mask"],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=model.llm.pad_id,
        eos_token_id=list(model.llm.eos_ids),
    )
    return [to_eos(gen, ids) for ids in out.tolist()]


def to_eos(gen: Any, ids: list[int]) -> list[int]:
    """`ids` through the first of the generator's eos ids."""
    cut = next((i for i, t in enumerate(ids) if t in gen.eos_ids), None)
    return ids if cut is None else ids[: cut + 1]


def ours_ids(gen: Any, records: list) -> list[list[int]]:
    batch = gen.collate(records)
    inputs = {k: v.to(gen.device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "pad"}
    from seller_dist.model.llm import GenerationConfig

    config = GenerationConfig(max_new_tokens=gen.gen.max_new_tokens, pointer=gen.gen.pointer)
    out = gen.seller.generate(inputs, gen=config)
    return [to_eos(gen, ids) for ids in out["tokens"].tolist()]


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from seller_dist.bench.train import bootstrap_llm, git_commit, machine
    from seller_dist.eval.generate import ExplanationGenerator, plan_batches, read_batches
    from seller_dist.train.export import load_trained

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    work = Path(args.work)
    data = args.data or str(work / f"data-u{args.users}")
    if not Path(data, "manifest.json").exists():
        from seller_dist.bench.data import prepare_dataset

        prepare_dataset(data, args.users, shard_records=2000)
    llm = args.llm or str(work / f"llm-h{args.llm_hidden}-l{args.llm_layers}")
    if not Path(llm, "config.json").exists():
        bootstrap_llm(data, llm, args.llm_hidden, args.llm_layers)
    trained = load_trained(args.checkpoint) if args.checkpoint else fresh_weights(data, llm)
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    gen = ExplanationGenerator(trained, data, "seller", opts, llm_path=llm)
    plan = plan_batches(gen.manifest, "test", args.examples, limit=args.examples)
    records = [r for _, recs in read_batches(gen.manifest, "test", plan, None) for r in recs]
    n = len(records)
    variants: list[dict[str, Any]] = []
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        chunks = [records[i : i + bs] for i in range(0, n, bs)]
        t_ours, _ = timed(lambda c=chunks: [gen.generate_batch(i, x) for i, x in enumerate(c)], args.repeats)
        ref = [ids for x in chunks for ids in ours_ids(gen, x)]
        t_hf, hf = timed(
            lambda c=chunks: [ids for x in c for ids in hf_generate(gen, x, opts.max_new_tokens)],
            args.repeats,
        )
        tokens = sum(len(ids) for ids in ref)
        for name, t, same in (("seller", t_ours, n), ("hf_batched" if bs > 1 else "hf_loop", t_hf, None)):
            row = {
                "variant": name,
                "batch_size": bs,
                "examples": n,
                "seconds": t,
                "explanations_per_s": n / t,
                "new_tokens_per_s": tokens / t,
            }
            if same is None:
                row["identical_to_seller"] = sum(a == b for a, b in zip(ref, hf, strict=True))
            variants.append(row)
    by = {(v["variant"], v["batch_size"]): v for v in variants}
    loop = next((v for v in variants if v["variant"] == "hf_loop"), None)
    ratios = {}
    for v in variants:
        if v["variant"] != "seller":
            continue
        hf_same = by.get(("hf_batched", v["batch_size"])) or by.get(("hf_loop", v["batch_size"]))
        if hf_same:
            ratios[f"seller_b{v['batch_size']}_over_hf_same_batch"] = (
                v["explanations_per_s"] / hf_same["explanations_per_s"]
            )
        if loop:
            ratios[f"seller_b{v['batch_size']}_over_hf_loop"] = (
                v["explanations_per_s"] / loop["explanations_per_s"]
            )
    return {
        "benchmark": "eval",
        "command": "seller-dist bench eval "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k
            in ("examples", "batch_sizes", "max_new_tokens", "repeats", "users", "llm_hidden", "llm_layers")
        ),
        "data": data,
        "llm": llm,
        "weights": trained.source,
        "variants": variants,
        "ratios": ratios,
        "git": git_commit(),
        "machine": machine(),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| variant | batch | explanations/s | new tokens/s | token-identical to seller |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for v in result["variants"]:
        same = v.get("identical_to_seller")
        ident = "" if same is None else f"{same}/{v['examples']}"
        lines.append(
            f"| {v['variant']} | {v['batch_size']} | {v['explanations_per_s']:.2f} | "
            f"{v['new_tokens_per_s']:.1f} | {ident} |"
        )
    lines += [f"{k}: {v:.2f}x" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = run_benchmark(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"[bench eval] results -> {out}")
    return 0
