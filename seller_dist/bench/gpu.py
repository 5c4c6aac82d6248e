"""One-GPU training benchmark: a frozen ~1B Llama-style LLM built from a config (random weights, no
hub), the SELLER adapter trained on it in bf16 on synthetic batches; prints tokens/s and MFU.

    cluster/gpu_bench.sh                      # 0.95B, seq 1024, bf16, about 3 minutes on an H200
    python -m seller_dist.bench.gpu --tiny    # CPU smoke test in seconds (same code path)

Why random weights: throughput does not depend on what the LLM knows, and no checkpoint download
is needed on a closed machine. The frozen LLM: hidden 2048, 16 layers, 32 heads, intermediate
5632, vocab 32000, untied embeddings (0.953B parameters, TinyLlama-shaped with full multi-head
attention). First a CUDA vs CPU consistency check (loss, gradients, greedy tokens), then each
variant (eager; full_logits = the LM head over every position, as before `logits_to_keep`;
compile = torch.compile of each frozen decoder layer) at each micro-batch size in
`--micro-batches` (warm-up steps, then `--seconds` of measured steps); the best is reported.
MFU = (4 N_frozen * tokens + 6 N_trainable * samples) / time / peak, the accounting of
seller_dist.train.metrics; "needed FLOPs" leaves out the input-embedding lookup and counts the
LM head only where a label is scored. BENCHMARKS.md has what it printed on an H200.
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


def bench_model(args: argparse.Namespace, llm_path: str = "") -> tuple[Any, Any]:
    """The adapter the benchmark trains: (ModelConfig, ModelVocab)."""
    from seller_dist.config import ModelConfig
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
        llm_path=llm_path,
    )
    return mcfg, vocab


def run_one(
    llm: Any, args: argparse.Namespace, micro: int, device: torch.device, variant: str = "eager"
) -> dict[str, Any]:
    """Plain PyTorch: the SELLER model and its MoE with one fused AdamW over the trainables."""
    from seller_dist.model.seller import SellerModel

    mcfg, vocab = bench_model(args)
    torch.manual_seed(0)
    model = SellerModel(mcfg, vocab, llm).to(device)
    moe = model.make_moe().to(device)
    params = [p for _, p in model.trainable_named_parameters()] + list(moe.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    batches = make_batches(
        4, micro, args.seq_len, llm.model.config.vocab_size, args.soft_tokens, vocab, device
    )
    model.train()
    moe.train()
    if variant == "checkpointing":
        llm.model.train()  # HF checkpoints layers only in train mode (Llama has no dropout to turn on)

    def step(i: int) -> torch.Tensor:
        out = model(batches[i % len(batches)], moe=moe)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out["loss"]

    return measure(step, llm, sum(p.numel() for p in params), batches, args, micro, device, variant)


def run_deepspeed(
    llm_dir: str, args: argparse.Namespace, micro: int, device: torch.device, variant: str
) -> dict[str, Any]:
    """The training job's own path on one rank: DeepSpeedStrategy (ZeRO-3 engine over the SELLER
    model with the LLM partitioned while loading, the MoE beside it), ds_configs/zero3_gpu.json
    with its "auto"s filled as the worker does, clip of dense + expert gradients, both optimizers.
    `deepspeed_compile` also calls DeepSpeed's own `engine.compile()`; `deepspeed_replicated` is
    train.llm_layout=replicated (a whole LLM outside the engine), `_compile` adds train.compile_llm."""
    import os
    from pathlib import Path

    import torch.distributed as dist

    from seller_dist.model.seller import SellerModel
    from seller_dist.train.strategy import DeepSpeedStrategy

    ds = json.loads((Path(__file__).resolve().parents[2] / "ds_configs" / "zero3_gpu.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=1, gradient_clipping=0.0)
    ds["bf16"] = {"enabled": device.type == "cuda"}
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(k, v)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as sock:  # a free loopback port for the one-rank process group
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    if device.type != "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    strategy = DeepSpeedStrategy(ds, "replicated" if "replicated" in variant else "zero3")
    if not dist.is_initialized():
        strategy.init_distributed()
    mcfg, vocab = bench_model(args, llm_dir)
    llm = strategy.load_llm(mcfg)
    if variant == "deepspeed_replicated_compile":
        llm.compile_layers()
    torch.manual_seed(0)
    model = SellerModel(mcfg, vocab, llm, register_llm=strategy.registers_llm)
    state = strategy.prepare(model, lr=1e-4)
    if variant == "deepspeed_compile":
        state.engine.compile()
    batches = make_batches(
        4, micro, args.seq_len, llm.model.config.vocab_size, args.soft_tokens, vocab, device
    )
    state.engine.train()

    def step(i: int) -> torch.Tensor:
        out = state.forward(batches[i % len(batches)])
        state.backward(out["loss"])
        state.clip_grad_norm(1.0)
        state.step()
        return out["loss"]

    n_train = sum(getattr(p, "ds_numel", p.numel()) for _, p in model.trainable_named_parameters())
    n_train += sum(p.numel() for p in state.moe.parameters()) if state.moe is not None else 0
    return measure(step, llm, n_train, batches, args, micro, device, variant)


def measure(
    step: Any,
    llm: Any,
    n_train: int,
    batches: list[dict[str, torch.Tensor]],
    args: argparse.Namespace,
    micro: int,
    device: torch.device,
    variant: str,
) -> dict[str, Any]:
    """Warm-up steps, then `--seconds` of measured steps; tokens/s, MFU, peak memory."""

    def numel(p: torch.Tensor) -> int:
        return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 partitioned parameters report 0

    n_frozen = sum(numel(p) for p in llm.parameters())
    n_embed = numel(llm.embedding.weight)
    n_head = numel(llm.model.get_output_embeddings().weight)
    # positions the LM head has to score per row: from the first label on (FrozenLLM.lm_loss)
    first = int((batches[0]["labels"][:, 1:] != -100).any(dim=0).nonzero()[0])
    head_positions = args.seq_len - first if llm._keeps_logits else args.seq_len
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_warm = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    sync()
    warmup_secs = time.perf_counter() - t_warm
    t0, steps = time.perf_counter(), 0
    loss = math.nan
    while steps < args.min_steps or time.perf_counter() - t0 < args.seconds:
        out = step(steps)
        if steps % 10 == 0:
            loss = float(out.detach())
        steps += 1
        if steps >= args.max_steps:
            break
    sync()
    secs = time.perf_counter() - t0
    tokens = steps * micro * args.seq_len
    samples = steps * micro
    flops = 4.0 * n_frozen * tokens + 6.0 * n_train * samples
    flops_no_embed = 4.0 * (n_frozen - n_embed) * tokens + 6.0 * n_train * samples
    # FLOPs the step needs: no input-embedding lookup, the head only where a label is scored
    flops_needed = (
        4.0 * (n_frozen - n_embed - n_head) * tokens
        + 4.0 * n_head * steps * micro * head_positions
        + 6.0 * n_train * samples
    )
    peak = args.peak_tflops * 1e12
    return {
        "variant": variant,
        "micro_batch": micro,
        "seq_len": args.seq_len,
        "steps": steps,
        "seconds": round(secs, 3),
        "warmup_seconds": round(warmup_secs, 1),
        "step_ms": 1e3 * secs / steps,
        "tokens_per_s": tokens / secs,
        "samples_per_s": samples / secs,
        "tflops": flops / secs / 1e12,
        "mfu": flops / secs / peak,
        "mfu_without_input_embedding": flops_no_embed / secs / peak,
        "mfu_needed_flops": flops_needed / secs / peak,
        "head_positions_per_row": head_positions,
        "frozen_params": n_frozen,
        "trainable_params": n_train,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "last_loss": loss,
    }


VARIANTS = (
    "eager",
    "full_logits",
    "compile",
    "checkpointing",
    "deepspeed",
    "deepspeed_compile",
    "deepspeed_replicated",
    "deepspeed_replicated_compile",
)
SINGLE_SIZE = VARIANTS[3:] + ("full_logits",)  # at --one-micro-batch


def prepare_variant(llm: Any, variant: str) -> None:
    """full_logits: the LM head over every position, as before `logits_to_keep`; compile: each
    frozen decoder layer through torch.compile (identical layers share one compiled graph);
    checkpointing: activation checkpointing inside the frozen LLM (non-reentrant)."""
    if variant == "full_logits":
        llm._keeps_logits = False
    elif variant == "checkpointing":
        llm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif variant == "compile":
        torch._dynamo.config.automatic_dynamic_shapes = False  # one static graph per micro-batch size
        llm.compile_layers()


def restore_variant(llm: Any, variant: str) -> None:
    if variant == "full_logits":
        llm._keeps_logits = True
    elif variant == "checkpointing":
        llm.model.gradient_checkpointing_disable()
    elif variant == "compile":
        for layer in llm.model.get_decoder().layers:
            layer._compiled_call_impl = None  # back to eager (what nn.Module.compile set)


def saved_llm(llm: Any, args: argparse.Namespace) -> str:
    """The benchmark's LLM written once as a Hugging Face checkpoint, for the DeepSpeed path to load
    the way the training job does (partitioned while loading)."""
    import tempfile

    if not getattr(args, "_llm_dir", None):
        args._llm_dir = tempfile.mkdtemp(prefix="gpu-bench-llm-")
        llm.model.save_pretrained(args._llm_dir)
    return args._llm_dir


def cuda_consistency_check(gpu: str = "cuda") -> dict[str, Any]:
    """The training loss, its gradients and greedy generation on the GPU against the CPU: fp32 with
    TF32 off must agree to float tolerance and give the same tokens; bf16 to bf16 tolerance."""
    from seller_dist.config import ModelConfig
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.synthetic import TokenIds, synthetic_batch
    from seller_dist.model.vocab import ModelVocab

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    vocab = ModelVocab(num_items=50, attribute_sizes=[5, 4], text_dim=8)
    mcfg = ModelConfig(d_model=32, num_heads=4, num_layers=1, dropout=0.0, expert_hidden=32, num_experts=4)
    ids = TokenIds(vocab_size=500, pad=0, bos=1, eos=2, soft=3)
    batch = synthetic_batch(vocab, ids, mcfg.num_soft_tokens, 6, 8, seed=1, explanation_len=6)
    out: dict[str, Any] = {}
    results = {}
    for name, dev, dtype in (
        ("cpu_fp32", "cpu", torch.float32),
        ("cuda_fp32", gpu, torch.float32),
        ("cuda_bf16", gpu, torch.bfloat16),
    ):
        # the same weights everywhere: built on the CPU in fp32, then moved and cast
        llm = build_llm(64, 2, 4, 128, 500, 64, torch.float32, torch.device("cpu"), "sdpa")
        llm.to(device=dev, dtype=dtype)
        torch.manual_seed(0)
        model = SellerModel(mcfg, vocab, llm).to(dev)
        moe = model.make_moe().to(dev)
        b = {k: v.to(dev) for k, v in batch.items()}
        with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(b, moe=moe)["loss"]
        loss.backward()
        grads = torch.cat([p.grad.float().flatten().cpu() for _, p in model.trainable_named_parameters()])
        gen_batch = {
            k: v.to(dev)
            for k, v in synthetic_batch(
                vocab, ids, mcfg.num_soft_tokens, 6, 8, seed=2, mode="generate"
            ).items()
        }
        model.eval()
        with (
            torch.no_grad(),
            torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16),
        ):
            tokens = model.generate(gen_batch, moe=moe)["tokens"].cpu()
        results[name] = (float(loss.detach()), grads, tokens)
    ref_loss, ref_grads, ref_tokens = results["cpu_fp32"]
    for name in ("cuda_fp32", "cuda_bf16"):
        loss, grads, tokens = results[name]
        out[name] = {
            "loss": loss,
            "cpu_loss": ref_loss,
            "loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss),
            "grad_max_abs_diff": float((grads - ref_grads).abs().max()),
            "grad_max_abs": float(ref_grads.abs().max()),
            "greedy_tokens_equal_cpu": bool(torch.equal(tokens, ref_tokens)),
        }
    fp32 = out["cuda_fp32"]
    out["passed"] = bool(
        fp32["loss_rel_diff"] < 1e-5
        and fp32["grad_max_abs_diff"] < 1e-4 * max(1.0, fp32["grad_max_abs"])
        and fp32["greedy_tokens_equal_cpu"]
        and out["cuda_bf16"]["loss_rel_diff"] < 3e-2
    )
    torch.backends.cuda.matmul.allow_tf32 = tf32
    print(
        f"[gpu-bench] CUDA vs CPU check: {'PASSED' if out['passed'] else 'FAILED'} {json.dumps(out)}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny LLM, a few steps")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--micro-batches", default="16,32,64", help="micro-batch sizes to time (OOM ones skipped)")
    p.add_argument(
        "--variants",
        default=None,
        help="eager: plain PyTorch as the model trains; full_logits: the LM head over every position "
        "(the old path); compile: torch.compile of each frozen decoder layer (the two largest sizes); "
        "checkpointing: activation checkpointing in the frozen LLM; deepspeed: the training job's "
        "DeepSpeedStrategy (ZeRO-3, one rank); deepspeed_compile: plus engine.compile() "
        "deepspeed_replicated[_compile]: train.llm_layout=replicated [+ train.compile_llm] "
        "(default: all; --tiny: eager,full_logits,checkpointing,deepspeed)",
    )
    p.add_argument("--one-micro-batch", type=int, default=32, help="size for the single-size variants")
    p.add_argument("--no-check", action="store_true", help="skip the CUDA vs CPU consistency check")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--soft-tokens", type=int, default=8)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--expert-hidden", type=int, default=1024)
    p.add_argument("--attn", default="sdpa", help="attn_implementation of the LLM (sdpa, eager, ...)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per micro-batch size")
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
        args.variants = args.variants or "eager,full_logits,checkpointing,deepspeed"
        args.one_micro_batch = 2
    args.variants = args.variants or ",".join(VARIANTS)
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
    if on_gpu and not args.no_check:
        result["cuda_check"] = cuda_consistency_check()
    micros = [int(m) for m in args.micro_batches.split(",") if m.strip()]
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        try:
            prepare_variant(llm, variant)
        except Exception as e:  # a compile that fails on this stack is reported, not fatal
            print(f"[gpu-bench] {variant}: could not prepare: {type(e).__name__}: {e}", flush=True)
            result.setdefault("errors", []).append(f"{variant}: {type(e).__name__}: {e}")
            continue
        # compile: the two largest sizes (a compile each); the others at one size
        sizes = [args.one_micro_batch] if variant in SINGLE_SIZE else micros
        sizes = micros[-2:] if variant == "compile" else sizes
        for micro in sizes:
            try:
                if variant.startswith("deepspeed"):
                    r = run_deepspeed(saved_llm(llm, args), args, micro, device, variant)
                else:
                    r = run_one(llm, args, micro, device, variant)
            except torch.OutOfMemoryError:
                print(f"[gpu-bench] {variant} micro-batch {micro}: out of memory, skipped", flush=True)
                torch.cuda.empty_cache()
                continue
            except Exception as e:
                print(f"[gpu-bench] {variant} micro-batch {micro}: {type(e).__name__}: {e}", flush=True)
                result.setdefault("errors", []).append(f"{variant}/{micro}: {type(e).__name__}: {e}")
                continue
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            result["runs"].append(r)
            print(
                f"[gpu-bench] {variant:11s} micro-batch {micro:3d}: {r['tokens_per_s']:10.0f} tokens/s  "
                f"{r['samples_per_s']:8.1f} samples/s  step {r['step_ms']:7.1f} ms  MFU {r['mfu']:.1%} "
                f"(needed FLOPs {r['mfu_needed_flops']:.1%})  warm-up {r['warmup_seconds']:.0f}s  "
                f"peak mem {r['peak_memory_gb'] or 0:.1f} GB",
                flush=True,
            )
            if args.out:  # partial results survive a later failure
                with open(args.out, "w") as f:
                    f.write(json.dumps(result, indent=2) + "\n")
        restore_variant(llm, variant)
    if not result["runs"]:
        print("[gpu-bench] every micro-batch size ran out of memory", file=sys.stderr)
        return 1
    best = max(result["runs"], key=lambda r: r["tokens_per_s"])
    result["best"] = best
    print(
        f"[gpu-bench] best: {best['variant']} micro-batch {best['micro_batch']}, "
        f"{best['tokens_per_s']:.0f} tokens/s, "
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
