"""Which soft-prompt positions steer the frozen LLM, measured on a trained checkpoint: the eval job's
greedy generation on the first N test examples, again with the adapter's positions, the title
pointer's positions or every soft position hidden from the LLM (attention mask 0, as the zero-shot
system hides them), each scored for naming a history item and the reference's event; and the soft
vectors' norms beside the prompt's own token embeddings. It exists to explain a measured result
(docs/results.md, "Why SELLER cited less than `bag`"), not as a product feature.

    python -m tools.soft_prompt_probe --checkpoint RUN/checkpoints --data DATA --llm LLM --out X.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from seller_dist.config import GenerationOptions
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import plan_batches, read_batches
from seller_dist.eval.generate import ExplanationGenerator
from seller_dist.eval.grounding import cited_item_ids, grounding_rates, mentions, normalize, reference_event
from seller_dist.train.export import load_trained
from seller_dist.version import provenance

HIDE = ("none", "adapter", "pointer", "all")


def hidden_positions(soft_mask: torch.Tensor, adapter_tokens: int, hide: str) -> torch.Tensor:
    """[B, T] bool: the soft positions to hide. A row's soft positions are [adapter | pointer]:
    the first `adapter_tokens` the adapter writes, the rest the title pointer (SellerModel)."""
    if hide == "none":
        return torch.zeros_like(soft_mask)
    if hide == "all":
        return soft_mask.clone()
    rank = soft_mask.long().cumsum(dim=1) - 1  # 0.. K-1 along each row's soft positions
    is_adapter = soft_mask & (rank < adapter_tokens)
    return is_adapter if hide == "adapter" else soft_mask & ~is_adapter


def hiding(collate: Callable[..., dict[str, Any]], adapter_tokens: int, hide: str) -> Callable:
    """The collator with the chosen soft positions masked out of the LLM's attention."""

    def call(records: Sequence[Any]) -> dict[str, Any]:
        batch = collate(records)
        drop = hidden_positions(batch["soft_mask"].bool(), adapter_tokens, hide)
        batch["attention_mask"] = batch["attention_mask"].masked_fill(drop, 0)
        return batch

    return call


@torch.no_grad()
def norms(gen: ExplanationGenerator, records: Sequence[Any]) -> dict[str, list[float]]:
    """Per-example L2 norms of the adapter's and the pointer's soft vectors (as generation builds
    them, hard pointer) and of the prompt's text token embeddings, in the LLM's input units."""
    model, moe = gen.seller.model, gen.seller.moe
    batch = {k: v for k, v in gen.collate(records).items() if isinstance(v, torch.Tensor)}
    soft, _, _ = model.soft_prompts(batch, moe, "hard")
    a = model.cfg.adapter_tokens
    text = batch["attention_mask"].bool() & ~batch["soft_mask"].bool()
    emb = model.llm.embedding(batch["input_ids"].masked_fill(batch["soft_mask"].bool(), model.llm.pad_id))
    return {
        "adapter": soft[:, :a].norm(dim=-1).flatten().tolist(),
        "pointer": soft[:, a:].norm(dim=-1).flatten().tolist(),  # empty without a pointer
        "text_tokens": emb[text].norm(dim=-1).tolist(),
    }


def spelled_title(tokenizer: Any, title: str, pointer_tokens: int) -> str:
    """The title's first `pointer_tokens` tokens as text: what the title pointer puts in front of
    the LLM (the whole title when it is that short)."""
    ids = tokenizer(" " + title, add_special_tokens=False)["input_ids"][:pointer_tokens]
    return tokenizer.decode(ids).strip()


def probe(checkpoint: str, data: str, llm: str, limit: int, split: str = "test") -> dict[str, Any]:
    trained = load_trained(checkpoint)
    options = GenerationOptions()
    gen = ExplanationGenerator(trained, data, "probe", options, llm_path=llm)
    manifest = Manifest.load(data)
    batches = read_batches(manifest, split, plan_batches(manifest, split, options.batch_size, limit), None)
    records = [r for _, rs in batches for r in rs]
    a = trained.model.adapter_tokens
    collate = gen.collate
    variants: dict[str, Any] = {}
    pointed: list[str | None] = []
    spelled: list[str] = []  # the pointed title as far as the pointer's positions spell it
    p = trained.model.num_soft_tokens - a
    for hide in HIDE:
        gen.collate = hiding(collate, a, hide)
        texts, t0 = [], time.perf_counter()
        for planned, rs in batches:
            gens, _, _ = gen.generate_batch(planned.index, rs)
            texts += [g.generated for g in gens]
            if hide == "none":  # the event the hard pointer names: the top supporting event
                tops = [g.supporting_events[0] if g.supporting_events else None for g in gens]
                pointed += [t.item_id if t else None for t in tops]
                spelled += [spelled_title(gen.tokenizer, t.title, p) if t and p else "" for t in tops]
        rates = grounding_rates(texts, records)
        names_pointed = [
            float(p is not None and p in cited_item_ids(t, r.history))
            for t, r, p in zip(texts, records, pointed, strict=True)
        ]
        writes_spelled = [
            float(bool(w) and mentions(normalize(t), w)) for t, w in zip(texts, spelled, strict=True)
        ]
        variants[f"hide_{hide}"] = {
            "cites_history": rates["cites_history"]["mean"],
            "cites_reference_event": rates.get("cites_reference_event", {}).get("mean"),
            "names_pointed_event": statistics.fmean(names_pointed),
            "writes_pointer_prefix": statistics.fmean(writes_spelled),
            "seconds": round(time.perf_counter() - t0, 1),
            "samples": texts[:4],
        }
    gen.collate = collate
    refs = [reference_event(r) for r in records]
    on_ref = [float(ref is not None and ref[0] == p) for ref, p in zip(refs, pointed, strict=True)]
    n = {"adapter": [], "pointer": [], "text_tokens": []}
    for _, rs in batches:
        for k, v in norms(gen, rs).items():
            n[k] += v
    whole = [
        float(bool(w) and normalize(w) != normalize(t))
        for w, t in zip(spelled, pointed_titles(batches, pointed), strict=True)
    ]
    return {
        "checkpoint": checkpoint,
        "step": trained.step,
        "model": {
            "prompt": trained.model.prompt,
            "history_encoder": trained.model.history_encoder,
            "adapter": trained.model.adapter,
            "adapter_tokens": a,
            "pointer_tokens": trained.model.num_soft_tokens - a,
            "prompt_format": trained.model.prompt_format,
        },
        "data": data,
        "examples": len(records),
        "pointer_on_reference_event": statistics.fmean(on_ref),
        "pointer_cuts_title": statistics.fmean(whole) if whole else None,
        "spelled_samples": spelled[:4],
        "variants": variants,
        "norm_mean": {k: (statistics.fmean(v) if v else None) for k, v in n.items()},
    }


def pointed_titles(batches: Sequence[Any], pointed: Sequence[str | None]) -> list[str]:
    titles = {ev.item_id: ev.title for _, rs in batches for r in rs for ev in r.history}
    return [titles.get(p, "") if p else "" for p in pointed]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, help="a run's checkpoints URL (repeat)")
    p.add_argument("--name", action="append", required=True, help="a name per --checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--llm", required=True)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if len(args.name) != len(args.checkpoint):
        p.error("give one --name per --checkpoint")
    torch.set_num_threads(2)
    runs = {}
    for name, ckpt in zip(args.name, args.checkpoint, strict=True):
        runs[name] = probe(ckpt, args.data, args.llm, args.limit)
        print(json.dumps({name: {k: v for k, v in runs[name].items() if k != "variants"}}))
        for hide, v in runs[name]["variants"].items():
            print(name, hide, {k: v[k] for k in v if k != "samples"})
    artifact = {"kind": "soft-prompt-probe", "provenance": provenance(), "runs": runs}
    Path(args.out).write_text(json.dumps(artifact, indent=2) + "\n")


if __name__ == "__main__":
    main()
