"""`seller-dist bench eval`: explanations/s of the eval job's batched generation (dynamic and static
decoding) against Hugging Face `generate` of the same model, batched and one example at a time, on
the same examples, frozen LLM and weights in one run, with how many explanations each is
token-identical to ours (greedy decoding must agree; a difference means a masking or position bug on
one side). `decode_benchmark` is the same comparison at LLM scale without the adapter: what
`cluster/gpu_bench.sh` runs at 8.8B."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from seller_dist.bench.artifact import write_artifact
from seller_dist.config import GenerationOptions, ModelConfig
from seller_dist.version import provenance


@dataclasses.dataclass(frozen=True)
class BenchEvalOptions:
    """What `seller-dist bench eval` measures (the CLI's flags, dashes for underscores)."""

    data: str | None = None  # prepared dataset (None: synthetic, prepared in `work`)
    llm: str | None = None  # frozen LLM dir (None: a random-weight Llama in `work`)
    checkpoint: str | None = None  # trained weights (None: a fresh SELLER init)
    work: str = ".cache/bench"  # where default inputs are prepared and reused
    users: int = 300
    llm_hidden: int = 128
    llm_layers: int = 2
    examples: int = 64  # test examples generated per variant
    batch_sizes: str = "1,16"  # comma-separated
    max_new_tokens: int = 32
    repeats: int = 2  # timed passes per variant (best is kept)
    decodes: str = "dynamic,static"  # eval.generation.decode values timed as seller and seller_static
    out: str | None = None  # the JSON artifact (None: outputs/bench/bench-eval-<UTC time>.json)


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
    return [to_eos(ids, gen.eos_ids) for ids in out.tolist()]


def to_eos(ids: list[int], eos_ids: Any) -> list[int]:
    """`ids` through the first of `eos_ids`."""
    cut = next((i for i, t in enumerate(ids) if t in eos_ids), None)
    return ids if cut is None else ids[: cut + 1]


def ours_ids(gen: Any, records: list) -> list[list[int]]:
    batch = gen.collate(records)
    inputs = {k: v.to(gen.device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "pad"}
    from seller_dist.model.llm import GenerationConfig

    config = GenerationConfig(max_new_tokens=gen.gen.max_new_tokens, pointer=gen.gen.pointer)
    out = gen.seller.generate(inputs, gen=config)
    return [to_eos(ids, gen.eos_ids) for ids in out["tokens"].tolist()]


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_benchmark(opts: BenchEvalOptions) -> dict[str, Any]:
    from seller_dist.bench.train import bootstrap_llm
    from seller_dist.data.split_batches import plan_batches, read_batches
    from seller_dist.eval.generate import ExplanationGenerator
    from seller_dist.train.export import load_trained

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    work = Path(opts.work)
    data = opts.data or str(work / f"data-u{opts.users}")
    if not Path(data, "manifest.json").exists():
        from seller_dist.bench.data import prepare_dataset

        prepare_dataset(data, opts.users, shard_records=2000)
    llm = opts.llm or str(work / f"llm-h{opts.llm_hidden}-l{opts.llm_layers}")
    if not Path(llm, "config.json").exists():
        bootstrap_llm(data, llm, opts.llm_hidden, opts.llm_layers)
    trained = load_trained(opts.checkpoint) if opts.checkpoint else fresh_weights(data, llm)
    gen_opts = GenerationOptions(max_new_tokens=opts.max_new_tokens)
    gen = ExplanationGenerator(trained, data, "seller", gen_opts, llm_path=llm)
    decodes = [d.strip() for d in opts.decodes.split(",") if d.strip()]
    static = None
    if "static" in decodes:
        static_opts = GenerationOptions(max_new_tokens=opts.max_new_tokens, decode="static")
        static = ExplanationGenerator(trained, data, "seller_static", static_opts, llm_path=llm)
    plan = plan_batches(gen.manifest, "test", opts.examples, limit=opts.examples)
    records = [r for _, recs in read_batches(gen.manifest, "test", plan, None) for r in recs]
    n = len(records)
    variants: list[dict[str, Any]] = []
    for bs in [int(x) for x in opts.batch_sizes.split(",")]:
        chunks = [records[i : i + bs] for i in range(0, n, bs)]
        t_ours, _ = timed(lambda c=chunks: [gen.generate_batch(i, x) for i, x in enumerate(c)], opts.repeats)
        ref = [ids for x in chunks for ids in ours_ids(gen, x)]
        t_hf, hf = timed(
            lambda c=chunks: [ids for x in c for ids in hf_generate(gen, x, gen_opts.max_new_tokens)],
            opts.repeats,
        )
        tokens = sum(len(ids) for ids in ref)
        timings = [("seller", t_ours, n), ("hf_batched" if bs > 1 else "hf_loop", t_hf, None)]
        if static is not None:
            t_static, _ = timed(
                lambda c=chunks: [static.generate_batch(i, x) for i, x in enumerate(c)], opts.repeats
            )
            same_static = [ids for x in chunks for ids in ours_ids(static, x)]
            timings.append(
                ("seller_static", t_static, sum(a == b for a, b in zip(ref, same_static, strict=True)))
            )
        for name, t, same in timings:
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
            elif name != "seller":
                row["identical_to_seller"] = same
            variants.append(row)
    by = {(v["variant"], v["batch_size"]): v for v in variants}
    loop = next((v for v in variants if v["variant"] == "hf_loop"), None)
    ratios = {}
    for v in variants:
        if v["variant"] not in ("seller", "seller_static"):
            continue
        name = v["variant"]
        hf_same = by.get(("hf_batched", v["batch_size"])) or by.get(("hf_loop", v["batch_size"]))
        if hf_same:
            ratios[f"{name}_b{v['batch_size']}_over_hf_same_batch"] = (
                v["explanations_per_s"] / hf_same["explanations_per_s"]
            )
        if loop and name == "seller":
            ratios[f"seller_b{v['batch_size']}_over_hf_loop"] = (
                v["explanations_per_s"] / loop["explanations_per_s"]
            )
    return {
        "benchmark": "eval",
        "provenance": provenance(),
        "settings": {
            k: getattr(opts, k)
            for k in (
                "examples",
                "batch_sizes",
                "max_new_tokens",
                "repeats",
                "users",
                "llm_hidden",
                "llm_layers",
                "decodes",
            )
        },
        "data": data,
        "llm": llm,
        "weights": trained.source,
        "variants": variants,
        "ratios": ratios,
    }


# ---------------------------------------------------------------------------- LLM-level decoding
# The eval job's decoding at LLM scale (BENCHMARKS.md, "Eval generation on a GPU"; run by
# `cluster/gpu_bench.sh`): the same left-padded prompt embeddings through
#   hf_default      Hugging Face generate(inputs_embeds=...), its default (dynamic) cache
#   eval_dynamic    FrozenLLM.generate, the eval job's default loop (eval.generation.decode=dynamic)
#   static          StaticDecoder, preallocated StaticCache, eager step (decode=static)
#   static_compiled StaticDecoder + torch.compile of the step, CUDA graphs on a GPU (+ compile=true)
#   hf_static       generate(..., cache_implementation="static") (Hugging Face compiles it on CUDA)
# greedy, at each batch size; every row is compared token for token (through eos) with hf_default.
#   static_cudagraphs  StaticDecoder, torch.compile(backend="cudagraphs"): CUDA graphs without
#                      inductor (seconds to capture, not a minute to compile; GPU only, not default)
DECODE_VARIANTS = (
    "hf_default",
    "eval_dynamic",
    "static",
    "static_compiled",
    "hf_static",
    "static_cudagraphs",
)
DEFAULT_DECODE_VARIANTS = DECODE_VARIANTS[:5]
PRIORITY = ("hf_default", "static_compiled", "static", "eval_dynamic", "hf_static", "static_cudagraphs")


def decode_prompts(llm: Any, batch: int, prompt_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids embedded by the LLM (as soft prompts arrive: `inputs_embeds`), left-padded
    to `prompt_len`; real lengths uniform in [3/4 prompt_len, prompt_len], the longest = prompt_len."""
    g = torch.Generator().manual_seed(seed)
    vocab = llm.embedding.num_embeddings
    ids = torch.randint(4, vocab, (batch, prompt_len), generator=g)
    lengths = torch.randint(max(1, 3 * prompt_len // 4), prompt_len + 1, (batch,), generator=g)
    lengths[0] = prompt_len
    mask = (torch.arange(prompt_len)[None, :] >= prompt_len - lengths[:, None]).long()
    device = llm.embedding.weight.device
    ids, mask = ids.masked_fill(mask == 0, llm.pad_id).to(device), mask.to(device)
    with torch.no_grad():
        return llm.embedding(ids), mask


def decode_benchmark(
    llm: Any,
    batch_sizes: Any = (16, 64),
    prompt_len: int = 256,
    new_tokens: int = 32,
    variants: Any = DEFAULT_DECODE_VARIANTS,
    repeats: int = 2,
    deadline: float | None = None,
    compile_backend: str = "inductor",
    on_row: Any = None,
) -> dict[str, Any]:
    """Tokens/s, ms per step, warm-up (compile) time, peak memory and token identity of each
    variant (DECODE_VARIANTS) at each batch size; one warm-up call, then the best of `repeats`.
    A variant started after `deadline` (time.time()) is recorded as skipped; `on_row(row)` sees
    each row as it is measured (the GPU script saves partial results with it)."""
    from seller_dist.eval.decode import StaticDecoder
    from seller_dist.model.llm import GenerationConfig

    device = llm.embedding.weight.device
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    eos = list(llm.eos_ids)
    gen = GenerationConfig(max_new_tokens=new_tokens)
    weights_gb = sum(p.numel() * p.element_size() for p in llm.parameters()) / 2**30

    def hf(embeds: torch.Tensor, mask: torch.Tensor, **kw: Any) -> torch.Tensor:
        return llm.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=llm.pad_id,
            eos_token_id=eos,
            **kw,
        )

    for v in variants:
        if v not in DECODE_VARIANTS:
            raise ValueError(f"decode variant {v!r}: choose from {', '.join(DECODE_VARIANTS)}")
    # what matters first runs first (a deadline skips the tail): the reference, ours, the rest
    order = sorted(
        ((b, v) for b in batch_sizes for v in variants),
        key=lambda bv: (PRIORITY.index(bv[1]), list(batch_sizes).index(bv[0])),
    )
    prompts = {b: decode_prompts(llm, b, prompt_len, seed=b) for b in batch_sizes}
    outputs: dict[tuple[int, str], list[list[int]]] = {}
    rows: list[dict[str, Any]] = []
    for b, v in order:
        embeds, mask = prompts[b]
        row: dict[str, Any] = {
            "variant": v,
            "batch_size": b,
            "prompt_len": prompt_len,
            "new_tokens": new_tokens,
        }
        if deadline is not None and time.time() > deadline:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        dec = None
        if v.startswith("static"):
            if v != "static":
                torch._dynamo.reset()  # a graph for this batch size only (the eval job pads to one)
            backend = "cudagraphs" if v == "static_cudagraphs" else compile_backend
            dec = StaticDecoder(llm, compile=v != "static", backend=backend)

        def call(v: str = v, embeds: Any = embeds, mask: Any = mask, dec: Any = dec) -> Any:
            with torch.no_grad():
                if v == "hf_default":
                    return hf(embeds, mask)
                if v == "hf_static":
                    return hf(embeds, mask, cache_implementation="static")
                if v == "eval_dynamic":
                    return llm.generate(embeds, mask, gen)
                return dec.generate(embeds, mask, gen)

        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            tokens = call()
            sync()
            row["warmup_seconds"] = round(time.perf_counter() - t0, 2)
            best = float("inf")
            for _ in range(max(1, repeats)):
                sync()
                t0 = time.perf_counter()
                tokens = call()
                sync()
                best = min(best, time.perf_counter() - t0)
        except Exception as e:  # an OOM or a compile this stack cannot do is a result, not a crash
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        else:
            cut = [to_eos(row, eos) for row in tokens.tolist()]
            outputs[(b, v)] = cut
            steps = max(len(r) for r in cut)
            n = sum(len(r) for r in cut)
            row.update(
                seconds=round(best, 4),
                steps=steps,
                generated_tokens=n,
                new_tokens_per_s=n / best,
                ms_per_step=1e3 * best / steps,
                peak_memory_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                weights_gb=round(weights_gb, 2),
            )
            if dec is not None and dec.compile_failed:
                row["compile_failed"] = dec.compile_failed
            ref = outputs.get((b, "hf_default"))
            if v != "hf_default" and ref is not None:
                row.update(agreement(cut, ref))
        if dec is not None:
            dec.cache = None  # free this variant's KV cache before the next one
        del call, dec
        if cuda:
            torch.cuda.empty_cache()
        rows.append(row)
        if on_row:
            on_row(row)
    return {"rows": rows, "ratios": decode_ratios(rows)}


def agreement(rows: list[list[int]], ref: list[list[int]]) -> dict[str, Any]:
    """Rows token-identical to `ref`, and where the others part: tokens before the first
    difference over all of ref's tokens, and the earliest step that differs. In bf16 on random
    weights the logits are nearly flat, so a rounding difference between two kernels can flip a
    greedy pick; the fp32 check (bench.gpu run_generate) is where identity must be exact."""
    same_prefix, first = 0, None
    for a, r in zip(rows, ref, strict=True):
        k = next((i for i, (x, y) in enumerate(zip(a, r, strict=False)) if x != y), min(len(a), len(r)))
        same_prefix += k
        if a != r:
            first = k if first is None else min(first, k)
    total = sum(len(r) for r in ref)
    return {
        "identical_to_hf_default": sum(a == r for a, r in zip(rows, ref, strict=True)),
        "matching_prefix_share": round(same_prefix / total, 4) if total else 1.0,
        "first_difference_step": first,
    }


def decode_ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """new tokens/s of each variant over hf_default (and static_compiled over hf_static), per batch."""
    by = {(r["variant"], r["batch_size"]): r for r in rows if "new_tokens_per_s" in r}
    out = {}
    for (v, b), r in sorted(by.items(), key=lambda x: (x[0][1], x[0][0])):
        for base in ("hf_default", "hf_static"):
            ref = by.get((base, b))
            if ref and v != base and not (base == "hf_static" and v != "static_compiled"):
                out[f"{v}_over_{base}_b{b}"] = round(r["new_tokens_per_s"] / ref["new_tokens_per_s"], 3)
    return out


def decode_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | batch | new tokens/s | ms/step | vs hf_default | warm-up s | peak GPU mem "
        "| identical to hf_default |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = {r["batch_size"]: r for r in rows if r["variant"] == "hf_default" and "new_tokens_per_s" in r}
    for r in sorted(rows, key=lambda r: (r["batch_size"], DECODE_VARIANTS.index(r["variant"]))):
        if "new_tokens_per_s" not in r:
            why = r.get("skipped") or r.get("error", "")
            lines.append(f"| {r['variant']} | {r['batch_size']} | {why[:60]} | | | | | |")
            continue
        mem = "" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f} GB"
        same = r.get("identical_to_hf_default")
        ident = "" if same is None else f"{same}/{r['batch_size']}"
        ref = base.get(r["batch_size"])
        vs = f"{r['new_tokens_per_s'] / ref['new_tokens_per_s']:.2f}" if ref else ""
        lines.append(
            f"| {r['variant']} | {r['batch_size']} | {r['new_tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | "
            f"{vs} | {r['warmup_seconds']:.1f} | {mem} | {ident} |"
        )
    return "\n".join(lines)


def variants_table(result: dict[str, Any]) -> str:
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
    return "\n".join(lines)


def run(opts: BenchEvalOptions) -> int:
    result = run_benchmark(opts)
    write_artifact(result, opts.out, "bench-eval")
    print(variants_table(result))
    for k, v in result["ratios"].items():
        print(f"{k}: {v:.2f}x")
    return 0
