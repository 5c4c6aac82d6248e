"""One-GPU training benchmark: a frozen ~1.1B Llama-style LLM built from a config (random weights, no
hub), the SELLER adapter trained on it in bf16 on synthetic batches; prints tokens/s and MFU.

    cluster/gpu_bench.sh                      # ~1.1B, seq 1024, bf16, about 6-8 minutes
    python -m seller_dist.bench.gpu --tiny    # CPU smoke test in seconds (same code path)

Why random weights: throughput does not depend on what the LLM knows, and no checkpoint download
is needed on a closed machine. The frozen LLM: hidden 2048, 16 layers, 32 heads, intermediate
5632, vocab 32000, untied embeddings (about 1.1B parameters, TinyLlama-sized but full multi-head
attention). Each micro-batch size in `--micro-batches` is timed (warm-up steps, then `--seconds`
of measured steps); the best is reported. MFU = (4 N_frozen * tokens + 6 N_trainable * samples)
/ time / peak, the accounting of seller_dist.train.metrics; a variant that leaves out the input
embedding table (a lookup, no FLOPs) is printed next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import torch

PEAKS = {"h100": 989.0, "h200": 989.0}  # dense bf16 TFLOP/s per GPU


def build_llm(
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    vocab: int,
    seq_len: int,
    dtype: torch.dtype,
    device: torch.device,
    attn: str,
) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    from seller_dist.model.llm import FrozenLLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(seq_len, 2048),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return FrozenLLM(model, pad_id=0, eos_id=2, soft_id=3)


def make_batches(
    n: int, micro: int, seq_len: int, vocab_size: int, num_soft: int, model_vocab: Any, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """`n` distinct synthetic batches of exactly `seq_len` tokens (prompt, K soft, explanation)."""
    from seller_dist.model.synthetic import TokenIds, synthetic_batch

    ids = TokenIds(vocab_size=vocab_size, pad=0, bos=1, eos=2, soft=3)
    expl = max(1, seq_len // 8)
    prompt = seq_len - 2 - num_soft - expl
    out = []
    for i in range(n):
        b = synthetic_batch(
            model_vocab,
            ids,
            num_soft,
            micro,
            hist_len=20,
            seed=i,
            explanation_len=expl,
            prompt_len=(prompt, prompt),
        )
        out.append({k: v.to(device, non_blocking=True) for k, v in b.items()})
    return out


def run_one(llm: Any, args: argparse.Namespace, micro: int, device: torch.device) -> dict[str, Any]:
    from seller_dist.config import ModelConfig
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.vocab import ModelVocab

    vocab = ModelVocab(num_items=5000, attribute_sizes=[12, 30], text_dim=0)
    mcfg = ModelConfig(
        d_model=args.d_model,
        num_layers=2,
        num_heads=4,
        num_soft_tokens=args.soft_tokens,
        num_experts=args.experts,
        top_k=2,
        expert_hidden=args.expert_hidden,
        ep_size=1,
        dropout=0.1,
    )
    torch.manual_seed(0)
    model = SellerModel(mcfg, vocab, llm).to(device)
    moe = model.make_moe().to(device)
    params = [p for _, p in model.trainable_named_parameters()] + list(moe.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    batches = make_batches(
        4, micro, args.seq_len, llm.model.config.vocab_size, args.soft_tokens, vocab, device
    )
    n_frozen = sum(p.numel() for p in llm.parameters())
    n_embed = llm.embedding.weight.numel()
    n_train = sum(p.numel() for p in params)
    model.train()
    moe.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(i: int) -> float:
        out = model(batches[i % len(batches)], moe=moe)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out["loss"].detach()) if i % 10 == 0 else math.nan

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup):
        step(i)
    sync()
    t0, steps = time.perf_counter(), 0
    loss = math.nan
    while steps < args.min_steps or time.perf_counter() - t0 < args.seconds:
        v = step(steps)
        loss = v if v == v else loss
        steps += 1
        if steps >= args.max_steps:
            break
    sync()
    secs = time.perf_counter() - t0
    tokens = steps * micro * args.seq_len
    samples = steps * micro
    flops = 4.0 * n_frozen * tokens + 6.0 * n_train * samples
    flops_no_embed = 4.0 * (n_frozen - n_embed) * tokens + 6.0 * n_train * samples
    peak = args.peak_tflops * 1e12
    return {
        "micro_batch": micro,
        "seq_len": args.seq_len,
        "steps": steps,
        "seconds": round(secs, 3),
        "step_ms": 1e3 * secs / steps,
        "tokens_per_s": tokens / secs,
        "samples_per_s": samples / secs,
        "tflops": flops / secs / 1e12,
        "mfu": flops / secs / peak,
        "mfu_without_input_embedding": flops_no_embed / secs / peak,
        "frozen_params": n_frozen,
        "trainable_params": n_train,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "last_loss": loss,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny LLM, a few steps")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--micro-batches", default="8,16,32", help="micro-batch sizes to time (OOM ones skipped)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--soft-tokens", type=int, default=8)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--expert-hidden", type=int, default=1024)
    p.add_argument("--attn", default="sdpa", help="attn_implementation of the LLM (sdpa, eager, ...)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per micro-batch size")
    p.add_argument("--min-steps", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--chip", choices=sorted(PEAKS), default="h200")
    p.add_argument("--peak-tflops", type=float, default=None, help="overrides --chip")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    if args.tiny:
        args.hidden, args.layers, args.heads, args.intermediate, args.vocab = 64, 2, 4, 128, 1000
        args.seq_len, args.micro_batches, args.d_model, args.expert_hidden = 128, "2", 32, 32
        args.warmup, args.seconds, args.min_steps = 1, 0.0, 3
    args.peak_tflops = args.peak_tflops or PEAKS[args.chip]
    on_gpu = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda") if on_gpu else torch.device("cpu")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    llm = build_llm(
        args.hidden,
        args.layers,
        args.heads,
        args.intermediate,
        args.vocab,
        args.seq_len,
        dtype,
        device,
        args.attn,
    )
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "llm": {k: getattr(args, k) for k in ("hidden", "layers", "heads", "intermediate", "vocab")},
        "frozen_params": sum(p.numel() for p in llm.parameters()),
        "peak_tflops": args.peak_tflops,
        "chip": args.chip,
        "build_seconds": round(time.perf_counter() - t0, 1),
        "runs": [],
    }
    print(
        f"[gpu-bench] {result['device']}: frozen LLM {result['frozen_params'] / 1e9:.3f}B params, "
        f"{dtype}, seq {args.seq_len}, peak {args.peak_tflops} TFLOP/s",
        flush=True,
    )
    for micro in [int(m) for m in args.micro_batches.split(",") if m.strip()]:
        try:
            r = run_one(llm, args, micro, device)
        except torch.OutOfMemoryError:
            print(f"[gpu-bench] micro-batch {micro}: out of memory, skipped", flush=True)
            torch.cuda.empty_cache()
            continue
        result["runs"].append(r)
        print(
            f"[gpu-bench] micro-batch {micro:3d}: {r['tokens_per_s']:10.0f} tokens/s  "
            f"{r['samples_per_s']:8.1f} samples/s  step {r['step_ms']:7.1f} ms  MFU {r['mfu']:.1%} "
            f"(w/o input embedding {r['mfu_without_input_embedding']:.1%})  "
            f"peak mem {r['peak_memory_gb'] or 0:.1f} GB",
            flush=True,
        )
    if not result["runs"]:
        print("[gpu-bench] every micro-batch size ran out of memory", file=sys.stderr)
        return 1
    best = max(result["runs"], key=lambda r: r["tokens_per_s"])
    result["best"] = best
    print(
        f"[gpu-bench] best: micro-batch {best['micro_batch']}, {best['tokens_per_s']:.0f} tokens/s, "
        f"MFU {best['mfu']:.1%} against {args.peak_tflops} TFLOP/s ({args.chip})",
        flush=True,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
