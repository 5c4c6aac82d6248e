"""One-GPU benchmarks, `run(GpuBenchOptions)`: `seller-dist bench gpu` trains the SELLER adapter on a
frozen ~1B Llama-style LLM through the training job's own step (tokens/s, MFU), `--generate` times
the eval job's decoding, `--suite` runs every GPU benchmark into one JSON (what
`cluster/gpu_bench.sh` runs); `--tiny` is a CPU smoke test of the same code. The LLMs are built from
a config with random weights, since throughput does not depend on what the LLM knows and a closed
GPU machine has no checkpoint to download; nothing here needs Ray, which that machine lacks."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from seller_dist.config import OptimConfig
from seller_dist.train.metrics import CHIP_PEAK_TFLOPS, flops_per_step, mfu
from seller_dist.version import installed_version, provenance

if TYPE_CHECKING:
    from seller_dist.model.vocab import ModelVocab
    from seller_dist.train.strategy import StrategyState

# what every variant's TrainStep runs with: a constant LR, the job's default clip at 1.0
BENCH_OPTIM = OptimConfig(lr=1e-4, schedule="constant", warmup_steps=0, grad_clip=1.0)


@dataclass(frozen=True)
class GpuBenchOptions:
    """What `seller-dist bench gpu` runs (its flags, dashes for underscores): the training benchmark
    by default, the decoding one with `generate`, every section with `suite`; `tiny` shrinks every
    shape to a CPU smoke test of seconds."""

    tiny: bool = False  # CPU smoke test: a tiny LLM, a few steps
    hidden: int = 2048  # the frozen LLM's shape (default: 0.953B, TinyLlama-shaped, full MHA)
    layers: int = 16
    heads: int = 32
    intermediate: int = 5632
    vocab: int = 32000
    seq_len: int = 1024
    micro_batches: str = "16,32,64"  # micro-batch sizes to time (OOM ones skipped)
    variants: str | None = None  # comma-separated, of VARIANTS (None: all; tiny: TINY_VARIANTS)
    one_micro_batch: int = 32  # size for the single-size variants (SINGLE_SIZE)
    no_check: bool = False  # skip the CUDA vs CPU consistency check (generate: the fp32 check)
    d_model: int = 256  # the adapter trained on the LLM
    soft_tokens: int = 8
    experts: int = 8
    expert_hidden: int = 1024
    attn: str = "sdpa"  # attn_implementation of the LLM (sdpa, eager, ...)
    warmup: int = 5
    seconds: float = 20.0  # measured seconds per micro-batch size
    min_steps: int = 5
    max_steps: int = 100000
    chip: str = "h200"  # peak for MFU: a key of CHIP_PEAK_TFLOPS
    peak_tflops: float | None = None  # overrides chip
    out: str | None = None  # the JSON result (written as rows come)
    generate: bool = False  # time decoding variants instead of training (run_generate)
    gen_batch_sizes: str = "16,64"
    prompt_len: int = 256  # prompt positions (left-padded)
    new_tokens: int = 32
    gen_variants: str | None = None  # None: all of bench.eval.DECODE_VARIANTS (CPU: not static_cudagraphs)
    gen_repeats: int = 2  # timed calls per variant (best kept)
    compile_backend: str = "inductor"  # torch.compile backend of static_compiled
    deadline_seconds: float = 0.0  # skip variants started later (0: none)
    suite: bool = False  # every GPU benchmark in one run, one JSON (run_suite)
    budget: float = 460.0  # seconds for the whole suite
    sections: str | None = None  # comma-separated, in order (None: all of SECTIONS)
    in_process: bool | None = None  # sections in this process, without timeouts (None: with tiny only)


TINY_LLM = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128, "vocab": 1000}
TINY_VARIANTS = "eager,full_logits,checkpointing,deepspeed"


def run(opts: GpuBenchOptions) -> int:
    """The suite, the decoding benchmark or the training benchmark, as `opts` asks."""
    if opts.suite:
        return run_suite(opts)
    if opts.tiny:
        torch.set_num_threads(1)  # a smoke test on a shared CPU: no thread oversubscription
    return run_generate(opts) if opts.generate else run_train(opts)


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


def bench_llm(opts: GpuBenchOptions, seq_len: int) -> tuple[Any, torch.device, torch.dtype]:
    """The frozen LLM of `opts`' shape for `seq_len` positions, with its device and dtype: bf16 on a
    GPU, fp32 on the CPU (where `tiny` always runs)."""
    on_gpu = torch.cuda.is_available() and not opts.tiny
    device = torch.device("cuda") if on_gpu else torch.device("cpu")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    llm = build_llm(
        opts.hidden, opts.layers, opts.heads, opts.intermediate, opts.vocab, seq_len, dtype, device, opts.attn
    )
    return llm, device, dtype


def make_batches(
    n: int, micro: int, seq_len: int, vocab_size: int, num_soft: int, model_vocab: Any, pin_memory: bool
) -> list[dict[str, torch.Tensor]]:
    """`n` distinct synthetic batches of exactly `seq_len` tokens (prompt, K soft, explanation), as
    the training job's prefetcher hands them to the step: on the host (pinned for a GPU), no pad rows."""
    from seller_dist.data.prefetch import pin
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
        b["pad"] = torch.zeros(micro, dtype=torch.bool)
        out.append(pin(b) if pin_memory else b)
    return out


def bench_model(opts: GpuBenchOptions, llm_path: str = "") -> tuple[Any, Any]:
    """The adapter the benchmark trains: (ModelConfig, ModelVocab)."""
    from seller_dist.config import ModelConfig
    from seller_dist.model.vocab import ModelVocab

    vocab = ModelVocab(num_items=5000, attribute_sizes=[12, 30], text_dim=0)
    mcfg = ModelConfig(
        d_model=opts.d_model,
        num_layers=2,
        num_heads=4,
        num_soft_tokens=opts.soft_tokens,
        num_experts=opts.experts,
        top_k=2,
        expert_hidden=opts.expert_hidden,
        ep_size=1,
        dropout=0.1,
        llm_path=llm_path,
    )
    return mcfg, vocab


def run_plain(
    llm: Any, opts: GpuBenchOptions, micro: int, device: torch.device, variant: str = "eager"
) -> dict[str, Any]:
    """Plain PyTorch (TorchStrategy) over the LLM built here: the SELLER model with its MoE and one
    AdamW over the trainables (fused on a GPU)."""
    from seller_dist.model.seller import SellerModel
    from seller_dist.strategy_settings import StrategySettings
    from seller_dist.train.strategy import TorchStrategy

    gpu = device.type == "cuda"
    strategy = TorchStrategy(StrategySettings(micro, bf16=gpu, use_gpu=gpu, world_size=1))
    mcfg, vocab = bench_model(opts)
    torch.manual_seed(0)
    state = strategy.prepare(SellerModel(mcfg, vocab, llm), BENCH_OPTIM)
    state.train()
    if variant == "checkpointing":
        llm.model.train()  # HF checkpoints layers only in train mode (Llama has no dropout to turn on)
    return measure(state, vocab, opts, micro, device, variant)


def run_deepspeed(
    llm_dir: str, opts: GpuBenchOptions, micro: int, device: torch.device, variant: str
) -> dict[str, Any]:
    """The training job's own path on one rank: DeepSpeedStrategy (ZeRO-3 engine over the SELLER
    model with the LLM partitioned while loading, the MoE beside it), its StrategySettings as the
    worker's (zero3_gpu.json, bf16 on a GPU; zero3_cpu.json on a CPU).
    `deepspeed_compile` also calls DeepSpeed's own `engine.compile()`; `deepspeed_replicated` is
    train.llm_layout=replicated (a whole LLM outside the engine), `_compile` adds train.compile_llm."""
    import os

    import torch.distributed as dist

    from seller_dist.model.seller import SellerModel
    from seller_dist.strategy_settings import StrategySettings
    from seller_dist.train.strategy import DeepSpeedStrategy

    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(k, v)
    if "MASTER_PORT" not in os.environ:
        from seller_dist.bench.local_services import free_port

        os.environ["MASTER_PORT"] = str(free_port())  # a free loopback port for the one-rank process group
    if device.type != "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    gpu = device.type == "cuda"
    settings = StrategySettings(
        micro,
        bf16=gpu,
        use_gpu=gpu,
        llm_layout="replicated" if "replicated" in variant else "zero3",
        deepcompile=variant == "deepspeed_deepcompile",  # DeepSpeed's DeepCompile: CUDA only, refused on CPU
    )
    strategy = DeepSpeedStrategy(settings)
    if not dist.is_initialized():
        strategy.init_distributed()
    mcfg, vocab = bench_model(opts, llm_dir)
    llm = strategy.load_llm(mcfg)
    if variant == "deepspeed_replicated_compile":
        llm.compile_layers()
    torch.manual_seed(0)
    model = SellerModel(mcfg, vocab, llm, register_llm=strategy.registers_llm)
    state = strategy.prepare(model, BENCH_OPTIM)
    if variant == "deepspeed_compile" or (
        variant == "deepspeed_deepcompile" and not getattr(state.engine, "is_compiled", False)
    ):
        state.engine.compile()  # DeepSpeedStrategy.prepare compiles a deepcompile config itself
    state.train()
    return measure(state, vocab, opts, micro, device, variant)


def measure(
    state: StrategyState,
    vocab: ModelVocab,
    opts: GpuBenchOptions,
    micro: int,
    device: torch.device,
    variant: str,
) -> dict[str, Any]:
    """The training job's step (TrainStep) over `state` on synthetic batches: warm-up steps, then
    `seconds` of measured steps; tokens/s, MFU, peak memory."""
    import itertools

    from seller_dist.train.metrics import parameter_counts
    from seller_dist.train.step import TrainStep

    def numel(p: torch.Tensor) -> int:
        return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 partitioned parameters report 0

    llm = state.model.llm
    batches = make_batches(
        4, micro, opts.seq_len, llm.model.config.vocab_size, opts.soft_tokens, vocab, device.type == "cuda"
    )
    train_step = TrainStep(state, BENCH_OPTIM, opts.max_steps, 0, itertools.cycle(batches), device)
    n_frozen, n_train = parameter_counts(state.model, state.moe)
    n_embed = numel(llm.embedding.weight)
    n_head = numel(llm.model.get_output_embeddings().weight)
    # positions the LM head has to score per row: from the first label on (FrozenLLM.lm_loss)
    first = int((batches[0]["labels"][:, 1:] != -100).any(dim=0).nonzero()[0])
    head_positions = opts.seq_len - first if llm._keeps_logits else opts.seq_len
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_warm = time.perf_counter()
    for i in range(opts.warmup):
        train_step(i)
    sync()
    warmup_secs = time.perf_counter() - t_warm
    t0, steps, tokens, samples = time.perf_counter(), 0, 0, 0
    loss = math.nan
    while steps < opts.min_steps or time.perf_counter() - t0 < opts.seconds:
        stats = train_step(opts.warmup + steps)
        tokens, samples, loss = tokens + stats.own_tokens, samples + stats.own_samples, stats.loss
        steps += 1
        if steps >= opts.max_steps:
            break
    sync()
    secs = time.perf_counter() - t0
    flops = flops_per_step(n_frozen, n_train, tokens, samples)
    flops_no_embed = flops_per_step(n_frozen - n_embed, n_train, tokens, samples)
    # FLOPs the step needs: no input-embedding lookup, the head only where a label is scored
    flops_needed = flops_per_step(n_frozen - n_embed - n_head, n_train, tokens, samples) + flops_per_step(
        n_head, 0, samples * head_positions, 0
    )
    return {
        "variant": variant,
        "micro_batch": micro,
        "seq_len": opts.seq_len,
        "steps": steps,
        "seconds": round(secs, 3),
        "warmup_seconds": round(warmup_secs, 1),
        "step_ms": 1e3 * secs / steps,
        "tokens_per_s": tokens / secs,
        "samples_per_s": samples / secs,
        "tflops": flops / secs / 1e12,
        "mfu": mfu(flops, secs, opts.peak_tflops),
        "mfu_without_input_embedding": mfu(flops_no_embed, secs, opts.peak_tflops),
        "mfu_needed_flops": mfu(flops_needed, secs, opts.peak_tflops),
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
    "deepspeed_deepcompile",
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


def saved_llm(llm: Any) -> str:
    """The benchmark's LLM written as a Hugging Face checkpoint (removed at exit), for the DeepSpeed
    path to load the way the training job does (partitioned while loading)."""
    import atexit
    import shutil
    import tempfile

    from seller_dist.model.bootstrap import TINY_CORPUS, train_tokenizer

    llm_dir = tempfile.mkdtemp(prefix="gpu-bench-llm-")
    atexit.register(shutil.rmtree, llm_dir, True)  # 2 GB at 0.95B, 17 GB at 8.8B
    llm.model.save_pretrained(llm_dir)
    # FrozenLLM.from_pretrained reads the family facts (pad, eos, soft ids) from a tokenizer:
    # a small one does (its ids are far below the vocab; the batches are token ids already)
    train_tokenizer(TINY_CORPUS, 300).save_pretrained(llm_dir)
    return llm_dir


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


# ------------------------------------------------------------------------------ generation section
SIZE_8B = {"hidden": 4096, "layers": 32, "heads": 32, "intermediate": 14336, "vocab": 128256}


def run_generate(opts: GpuBenchOptions) -> int:
    """The eval job's decoding at LLM scale (seller_dist.bench.eval.decode_benchmark): Hugging Face
    generate (default and static cache) against FrozenLLM.generate and the StaticDecoder, eager and
    compiled, on random-weight prompts embedded by the LLM. JSON rows per variant and batch size."""
    from seller_dist.bench.eval import (
        DECODE_VARIANTS,
        DEFAULT_DECODE_VARIANTS,
        decode_benchmark,
        decode_table,
    )

    if opts.tiny:
        opts = replace(opts, **TINY_LLM, gen_batch_sizes="2,4", prompt_len=16, new_tokens=8, gen_repeats=1)
        if opts.compile_backend == "inductor":
            # dynamo's capture without a C++ build: seconds, not a minute
            opts = replace(opts, compile_backend="eager")
    t0 = time.perf_counter()
    llm, device, dtype = bench_llm(opts, opts.prompt_len + opts.new_tokens)
    on_gpu = device.type == "cuda"
    default = DECODE_VARIANTS if on_gpu else DEFAULT_DECODE_VARIANTS  # cudagraphs needs CUDA
    variants = [v.strip() for v in (opts.gen_variants or ",".join(default)).split(",") if v.strip()]
    batch_sizes = [int(b) for b in opts.gen_batch_sizes.split(",") if b.strip()]
    result: dict[str, Any] = {
        "benchmark": "generate",
        "provenance": provenance(),
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": installed_version("transformers"),
        "llm": {k: getattr(opts, k) for k in ("hidden", "layers", "heads", "intermediate", "vocab")},
        "frozen_params": sum(p.numel() for p in llm.parameters()),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "prompt_len": opts.prompt_len,
        "new_tokens": opts.new_tokens,
        "batch_sizes": batch_sizes,
        "compile_backend": opts.compile_backend,
        "rows": [],
    }
    print(
        f"[gpu-bench] generate: {result['device']}, frozen LLM {result['frozen_params'] / 1e9:.3f}B, {dtype}, "
        f"{opts.prompt_len} prompt positions, {opts.new_tokens} new tokens, batch sizes {batch_sizes}",
        flush=True,
    )

    def save(row: dict[str, Any]) -> None:
        result["rows"].append(row)
        tail = (
            row.get("skipped")
            or row.get("error")
            or (
                f"{row['new_tokens_per_s']:9.0f} new tokens/s  {row['ms_per_step']:6.1f} ms/step  "
                f"warm-up {row['warmup_seconds']:.1f}s  peak mem {row['peak_memory_gb'] or 0:.1f} GB  "
                f"identical to hf_default {row.get('identical_to_hf_default', '-')} "
                f"(matching prefix {row.get('matching_prefix_share', '-')})"
            )
        )
        print(f"[gpu-bench] generate {row['variant']:15s} batch {row['batch_size']:3d}: {tail}", flush=True)
        _write(opts.out, result)

    deadline = time.time() + opts.deadline_seconds if opts.deadline_seconds > 0 else None
    if not opts.no_check:
        result["fp32_check"] = decode_fp32_check(device, opts.compile_backend)
        _write(opts.out, result)
    res = decode_benchmark(
        llm,
        batch_sizes,
        opts.prompt_len,
        opts.new_tokens,
        variants,
        opts.gen_repeats,
        deadline=deadline,
        compile_backend=opts.compile_backend,
        on_row=save,
    )
    result["ratios"] = res["ratios"]
    _write(opts.out, result)
    print(decode_table(result["rows"]))
    print(json.dumps(result["ratios"], indent=2), flush=True)
    return 0 if any("new_tokens_per_s" in r for r in result["rows"]) else 1


def decode_fp32_check(device: torch.device, compile_backend: str = "inductor") -> dict[str, Any]:
    """Token identity where it must be exact: a small random Llama in fp32 (TF32 off) on the GPU,
    8 left-padded prompts, 16 new tokens; the StaticDecoder eager and compiled (CUDA graphs) against
    Hugging Face generate. In bf16 at 8.8B near-flat random logits let kernel rounding flip picks."""
    from seller_dist.bench.eval import decode_benchmark

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        llm = build_llm(256, 4, 8, 688, 2000, 128, torch.float32, device, "sdpa")
        res = decode_benchmark(
            llm, (8,), 64, 16, ("hf_default", "static", "static_compiled"), 1, compile_backend=compile_backend
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    rows = [r for r in res["rows"] if r["variant"] != "hf_default"]
    passed = all(r.get("identical_to_hf_default") == r["batch_size"] for r in rows)
    out = {"passed": passed, "rows": res["rows"]}
    print(
        f"[gpu-bench] generate fp32 check (StaticDecoder vs HF generate, small Llama): "
        f"{'PASSED' if passed else 'FAILED'} "
        + json.dumps({r["variant"]: r.get("identical_to_hf_default", r.get("error")) for r in rows}),
        flush=True,
    )
    return out


def _write(path: str | None, result: dict[str, Any]) -> None:
    if path:  # partial results survive a later failure or a timeout
        with open(path, "w") as f:
            f.write(json.dumps(result, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------ the one-run suite
# name -> (what it runs, how, nominal timeout s): in priority order; each section is a process of
# its own (GPU memory, CUDA errors and hung compiles stay inside it) with min(timeout, budget left).
# "gpu" sections are this module's benchmarks with those GpuBenchOptions fields; "cli" ones the
# project CLI with those arguments, guarded: a mode that does not exist (yet) or fails is an error
# in the JSON, not the end of the run.
SECTIONS: dict[str, tuple[str, dict[str, Any] | list[str], float]] = {
    "generate_8.8b": (
        "gpu",
        {"generate": True, **SIZE_8B, "gen_batch_sizes": "16,64", "prompt_len": 256, "new_tokens": 32},
        230.0,
    ),
    "train_0.95b": (
        "gpu",
        {"variants": "eager,compile,deepspeed,deepspeed_replicated_compile", "micro_batches": "32"},
        120.0,
    ),
    "deepcompile_0.95b": (
        "gpu",
        {"variants": "deepspeed_deepcompile", "micro_batches": "32", "no_check": True},
        60.0,
    ),
    "bench_train_gpu": ("cli", ["bench", "train", "--gpu"], 110.0),  # incl. writing the random 0.95B LLM
    "bench_train_gpu_deepcompile": ("cli", ["bench", "train", "--gpu", "--deepcompile"], 40.0),
    "train_8.8b": ("gpu", {**SIZE_8B, "variants": "compile", "micro_batches": "16", "no_check": True}, 75.0),
    "vllm": ("probe", [], 5.0),
}
MIN_SECTION_SECONDS = 20.0  # a section with less budget left is skipped


def section_options(name: str, opts: GpuBenchOptions, out: str) -> dict[str, Any]:
    """The GpuBenchOptions fields a "gpu" section runs with: its own, at the suite's seconds and
    chip, its first micro-batch for the single-size variants; with `tiny`, tiny shapes and its
    variants without inductor compiles (a minute of C++ builds on a small CPU; DeepCompile stays:
    it is refused on a CPU at once, which the smoke test records)."""
    own = dict(SECTIONS[name][1])
    if opts.tiny:
        if "variants" in own:
            keep = [
                v for v in own["variants"].split(",") if "compile" not in v or v == "deepspeed_deepcompile"
            ]
            own["variants"] = ",".join(keep or ["eager"])
        return {**own, "tiny": True, "out": out}
    extra: dict[str, Any] = {"seconds": opts.seconds, "chip": opts.chip}
    if "micro_batches" in own:
        extra["one_micro_batch"] = int(own["micro_batches"].split(",")[0])
    return {**own, **extra, "out": out}


CLI = [sys.executable, "-m", "seller_dist.cli"]


def section_command(name: str, opts: GpuBenchOptions, out: str, deadline_s: float = 0.0) -> list[str]:
    """A section's own process: `seller-dist bench gpu` with its options (decoding variants started
    after `deadline_s` skipped), or the CLI command it names."""
    kind, how, _ = SECTIONS[name]
    if kind == "cli":  # the CLI's own modes decide their sizes; --tiny is not passed (it may not exist there)
        return [*CLI, *how, "--out", out]
    fields = section_options(name, opts, out)
    if deadline_s:
        fields["deadline_seconds"] = deadline_s
    return [*CLI, "bench", "gpu", *gpu_flags(fields)]


def gpu_flags(fields: dict[str, Any]) -> list[str]:
    """GpuBenchOptions fields as `seller-dist bench gpu` flags: a flag alone for True, none for
    False or None (the defaults of the fields a section sets)."""
    out: list[str] = []
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not None and value is not False:
            out += [flag, str(value)]
    return out


def run_section(command: list[str], timeout: float, out: str) -> dict[str, Any]:
    """One section in its own process group, output streamed through; killed at `timeout`. Its JSON
    (written as it goes) is read back even after a timeout or a failure."""
    import collections
    import os
    import signal
    import subprocess
    import threading

    t0 = time.perf_counter()
    rec: dict[str, Any] = {"command": " ".join(command), "timeout_s": round(timeout, 1)}
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as e:
        return {**rec, "status": "error", "error": f"{type(e).__name__}: {e}", "seconds": 0.0}

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
        status = "ok" if rc == 0 else "error"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # this section's process group, which we started
        rc = proc.wait()
        status = "timeout"
    reader.join(timeout=5)
    rec.update(status=status, rc=rc, seconds=round(time.perf_counter() - t0, 1))
    result = _read_json(out)
    if result is not None:
        rec["result"] = result
    elif status == "ok":
        rec["status"] = "error"  # a zero exit with no JSON (e.g. a module without that mode)
    if rec["status"] != "ok":
        rec["error"] = "\n".join(tail)[-3000:]
    return _with_errors(rec)


def _with_errors(rec: dict[str, Any]) -> dict[str, Any]:
    """A section that ran but lost rows (an OOM, a refused compile) says so next to its status."""
    errors = (rec.get("result") or {}).get("errors")
    if errors:
        rec["errors"] = errors
    return rec


def run_section_in_process(fields: dict[str, Any]) -> dict[str, Any]:
    """--tiny / --in-process: the section's benchmark here (no timeout, one interpreter start)."""
    t0 = time.perf_counter()
    rec: dict[str, Any] = {
        "command": "in-process: seller-dist bench gpu " + " ".join(gpu_flags(fields)),
        "timeout_s": None,
    }
    out = fields["out"]
    try:
        rc = run(GpuBenchOptions(**fields))
        status, err = ("ok" if rc == 0 else "error"), None
    except SystemExit as e:
        rc, status, err = e.code, "error", f"SystemExit: {e.code}"
    except Exception as e:
        rc, status, err = None, "error", f"{type(e).__name__}: {e}"
    rec.update(status=status, rc=rc, seconds=round(time.perf_counter() - t0, 1))
    result = _read_json(out)
    if result is not None:
        rec["result"] = result
    if err:
        rec["error"] = err
    return _with_errors(rec)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def probe_vllm() -> dict[str, Any]:
    """vLLM's `prompt_embeds` is what a user would compare the eval decoding against; the GPU image
    has no package index, so it is measured only where vLLM is already installed."""
    import importlib.util

    t0 = time.perf_counter()
    if importlib.util.find_spec("vllm") is None:
        return {"status": "skipped", "error": "vllm is not installed here", "seconds": 0.0}
    return {
        "status": "skipped",
        "result": {"vllm": installed_version("vllm")},
        "error": "vllm is installed but not run by this suite (it would need the 8.8B LLM saved: ~17 GB)",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def suite_summary(sections: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: generation rows and ratios, training rows (tokens/s, MFU, memory)."""
    out: dict[str, Any] = {"generation": [], "generation_ratios": {}, "training": []}
    for name, rec in sections.items():
        res = rec.get("result") or {}
        if res.get("benchmark") == "generate":
            out["generation"] += [{"section": name, **r} for r in res.get("rows", [])]
            out["generation_ratios"].update({f"{name}:{k}": v for k, v in res.get("ratios", {}).items()})
        for r in res.get("runs", []):
            keep = (
                "variant",
                "micro_batch",
                "tokens_per_s",
                "step_ms",
                "mfu",
                "peak_memory_gb",
                "warmup_seconds",
            )
            out["training"].append({"section": name, **{k: r.get(k) for k in keep}})
    return out


def run_suite(opts: GpuBenchOptions) -> int:
    """Every GPU benchmark in one run under one time budget, one JSON (docs/bench/ by default)."""
    import datetime
    import shutil
    import tempfile
    from pathlib import Path

    names = [n.strip() for n in (opts.sections or ",".join(SECTIONS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    on_gpu = torch.cuda.is_available() and not opts.tiny  # NVML only: no CUDA context in this process
    in_process = opts.tiny if opts.in_process is None else opts.in_process
    if opts.seconds == GpuBenchOptions.seconds and not opts.tiny:
        # the suite's default per measured row (the training bench alone: 20 s)
        opts = replace(opts, seconds=6.0)
    day = datetime.date.today().isoformat()
    out = opts.out or (
        f"outputs/bench/gpu-suite-tiny-{day}.json"
        if opts.tiny
        else f"docs/bench/gpu-suite-{opts.chip}-{day}.json"
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="gpu-suite-")
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "suite": "gpu",
        "tiny": bool(opts.tiny),
        "provenance": provenance(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": installed_version("transformers"),
        "deepspeed": installed_version("deepspeed"),
        "cuda_available": on_gpu,
        "budget_s": opts.budget,
        "seconds_per_row": None if opts.tiny else opts.seconds,
        "sections": {},
    }
    print(f"[gpu-suite] sections {names}, budget {opts.budget:.0f}s, -> {out}", flush=True)
    for name in names:
        kind, _, nominal = SECTIONS[name]
        left = opts.budget - (time.perf_counter() - t_start)
        if kind == "probe":
            rec = probe_vllm()
        elif left < MIN_SECTION_SECONDS and not opts.tiny:
            rec = {"status": "skipped", "error": f"time budget: {left:.0f}s left", "seconds": 0.0}
        else:
            path = str(Path(work) / f"{name}.json")
            timeout = min(nominal, left) if not opts.tiny else 60.0
            print(f"[gpu-suite] --- {name} (up to {timeout:.0f}s)", flush=True)
            if kind == "gpu" and in_process:
                rec = run_section_in_process(section_options(name, opts, path))
            else:
                # decoding variants started later are skipped (a compile can take a minute past it)
                deadline = max(10.0, timeout - 60.0) if name.startswith("generate") else 0.0
                rec = run_section(section_command(name, opts, path, deadline), timeout, path)
        result["sections"][name] = rec
        print(f"[gpu-suite] {name}: {rec['status']} in {rec.get('seconds', 0)}s", flush=True)
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        result["summary"] = suite_summary(result["sections"])
        _write(out, result)
    result["device"] = next(
        (r["result"]["device"] for r in result["sections"].values() if "device" in (r.get("result") or {})),
        "cpu",
    )
    _write(out, result)
    from seller_dist.bench.eval import decode_table

    if result["summary"]["generation"]:
        print(decode_table(result["summary"]["generation"]))
    print(f"[gpu-suite] done in {result['wall_s']}s -> {out}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def run_train(opts: GpuBenchOptions) -> int:
    """The training benchmark: the CUDA vs CPU check, then each variant at each micro-batch size;
    the runs and the best as JSON and a Markdown table (train_table)."""
    if opts.tiny:
        opts = replace(
            opts,
            **TINY_LLM,
            seq_len=128,
            micro_batches="2",
            d_model=32,
            expert_hidden=32,
            warmup=1,
            seconds=0.0,
            min_steps=3,
            variants=opts.variants or TINY_VARIANTS,
            one_micro_batch=2,
        )
    opts = replace(
        opts,
        variants=opts.variants or ",".join(VARIANTS),
        peak_tflops=opts.peak_tflops or CHIP_PEAK_TFLOPS[opts.chip],
    )
    t0 = time.perf_counter()
    llm, device, dtype = bench_llm(opts, opts.seq_len)
    on_gpu = device.type == "cuda"
    if on_gpu:  # TF32 for the measured steps (building the LLM ran no matmul)
        torch.backends.cuda.matmul.allow_tf32 = True
    result: dict[str, Any] = {
        "benchmark": "gpu-train",
        "provenance": provenance(),
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "llm": {k: getattr(opts, k) for k in ("hidden", "layers", "heads", "intermediate", "vocab")},
        "frozen_params": sum(p.numel() for p in llm.parameters()),
        "peak_tflops": opts.peak_tflops,
        "chip": opts.chip,
        "build_seconds": round(time.perf_counter() - t0, 1),
        "runs": [],
    }
    print(
        f"[gpu-bench] {result['device']}: frozen LLM {result['frozen_params'] / 1e9:.3f}B params, "
        f"{dtype}, seq {opts.seq_len}, peak {opts.peak_tflops} TFLOP/s",
        flush=True,
    )
    if on_gpu and not opts.no_check:
        result["cuda_check"] = cuda_consistency_check()
    micros = [int(m) for m in opts.micro_batches.split(",") if m.strip()]
    llm_dir = ""  # the LLM saved for the deepspeed variants, once
    for variant in [v.strip() for v in opts.variants.split(",") if v.strip()]:
        if variant not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        try:
            prepare_variant(llm, variant)
        except Exception as e:  # a compile that fails on this stack is reported, not fatal
            print(f"[gpu-bench] {variant}: could not prepare: {type(e).__name__}: {e}", flush=True)
            result.setdefault("errors", []).append(f"{variant}: {type(e).__name__}: {e}")
            continue
        # compile: the two largest sizes (a compile each); the others at one size
        sizes = [opts.one_micro_batch] if variant in SINGLE_SIZE else micros
        sizes = micros[-2:] if variant == "compile" else sizes
        for micro in sizes:
            try:
                if variant.startswith("deepspeed"):
                    llm_dir = llm_dir or saved_llm(llm)
                    r = run_deepspeed(llm_dir, opts, micro, device, variant)
                else:
                    r = run_plain(llm, opts, micro, device, variant)
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
            _write(opts.out, result)  # partial results survive a later failure
        restore_variant(llm, variant)
    if not result["runs"]:
        print("[gpu-bench] no variant ran (out of memory, or the errors above)", file=sys.stderr)
        _write(opts.out, result)
        return 1
    best = max(result["runs"], key=lambda r: r["tokens_per_s"])
    result["best"] = best
    print(
        f"[gpu-bench] best: {best['variant']} micro-batch {best['micro_batch']}, "
        f"{best['tokens_per_s']:.0f} tokens/s, "
        f"MFU {best['mfu']:.1%} against {opts.peak_tflops} TFLOP/s ({opts.chip})",
        flush=True,
    )
    _write(opts.out, result)
    print(json.dumps(result, indent=2))
    print(train_table(result))
    return 0


def train_table(result: dict[str, Any]) -> str:
    """One row per measured (variant, micro-batch); "vs eager" is tokens/s over eager at the same
    micro-batch, where eager ran at it."""
    lines = [
        "| variant | micro-batch | tokens/s | samples/s | step ms | vs eager | MFU (4N+6N) | MFU, needed FLOPs "
        "| peak GPU mem |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    eager = {r["micro_batch"]: r for r in result["runs"] if r["variant"] == "eager"}
    for r in result["runs"]:
        ref = eager.get(r["micro_batch"])
        vs = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}" if ref else ""
        mem = "" if r.get("peak_memory_gb") is None else f"{r['peak_memory_gb']:.1f} GB"
        lines.append(
            f"| {r['variant']} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | {r['samples_per_s']:.1f} | "
            f"{r['step_ms']:.1f} | {vs} | {r['mfu']:.1%} | {r['mfu_needed_flops']:.1%} | {mem} |"
        )
    return "\n".join(lines)
