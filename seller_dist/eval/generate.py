"""One eval worker's job: explanations (and the history events behind them) for its batches.
Batches are planned from the manifest alone (seller_dist.data.split_batches: each from one shard, in order)
and a worker takes every W-th one, so a batch holds the same examples with the same padding whatever the
worker count and results never depend on W (docs/evaluation.md, "The eval job"). `ExplanationGenerator` is
plain PyTorch: the eval job wraps it in a Ray actor, tests and benchmarks call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seller_dist.config import GenerationOptions, StorageConfig
from seller_dist.data.schema import ExampleRecord
from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import PlannedBatch, read_batches
from seller_dist.eval import references as reference_kinds
from seller_dist.eval.generations import Generation, SupportingEvent
from seller_dist.model.llm import GenerationConfig
from seller_dist.train.export import TrainedWeights


def supporting_events(
    record: ExampleRecord, attention_row: torch.Tensor, max_history: int, top: int
) -> list[SupportingEvent]:
    """The `top` most attended real history events of one example (offset 0 = the newest event).
    The collate left-pads the history to `max_history` columns, newest last."""
    if top <= 0:
        return []
    hist = record.history[-max_history:]
    weights = attention_row[-len(hist) :].float().tolist() if hist else []
    ranked = sorted(range(len(hist)), key=lambda i: (-weights[i], -i))[:top]  # ties: the newest
    out = []
    for i in ranked:
        if weights[i] <= 0.0:
            continue
        ev = hist[i]
        out.append(SupportingEvent(len(hist) - 1 - i, ev.item_id, ev.title, float(weights[i])))
    return out


@dataclass
class GeneratedPart:
    """What one worker returns to the driver."""

    generations: list[Generation]
    expert_tokens: list[float] = field(default_factory=list)  # soft-token assignments per expert
    new_tokens: int = 0  # generated tokens (up to and including eos)
    seconds: float = 0.0  # model time (load excluded)
    load_seconds: float = 0.0
    # generation.compile=true whose step did not compile: decoded eagerly, and this says why
    compile_fallback: str | None = None


class ExplanationGenerator:
    """Frozen LLM + trained weights + the generate-mode collate of one dataset, on one device."""

    def __init__(
        self,
        trained: TrainedWeights,
        dataset_root: str,
        system: str,
        gen: GenerationOptions,
        llm_path: str = "",
        storage_cfg: StorageConfig | None = None,
        device: str = "cpu",
    ):
        from seller_dist.data.catalog import ItemCatalog
        from seller_dist.data.collate import SellerCollator
        from seller_dist.model.llm_source import load_tokenizer_files, resolve_llm_path
        from seller_dist.train.export import build_seller

        t0 = time.perf_counter()
        torch.manual_seed(0)  # nothing random is drawn at eval, but module init must not vary by rank
        self.manifest = Manifest.load(dataset_root, storage_cfg)
        self.storage_cfg, self.system, self.gen = storage_cfg, system, gen
        m = trained.model
        path = llm_path or m.llm_path
        llm_dir = resolve_llm_path(path, m.llm_cache_dir, storage_cfg)
        catalog = ItemCatalog.load(dataset_root, self.manifest, storage_cfg)
        self.collate = SellerCollator.for_dataset(
            self.manifest.data["vocab"],
            catalog,
            load_tokenizer_files(llm_dir, m.trust_remote_code),
            num_soft_tokens=m.num_soft_tokens,
            mode="generate",
            history_text=m.history_text,
            prompt_format=m.prompt_format,
            instruction=m.prompt_instruction,
        )
        self.max_history = self.collate.max_history
        self.seller = build_seller(trained, llm_path=llm_dir, storage_cfg=storage_cfg)
        self.device = torch.device(device)
        self.seller.model.to(self.device)
        if self.seller.moe is not None:
            self.seller.moe.to(self.device)
        self.tokenizer = self.collate.tokenizer
        # any of the family's eos ids ends a generation (Llama 3 Instruct: end_of_text and eot_id)
        llm = self.seller.model.llm
        if self.collate.eos_id not in llm.eos_ids:  # prompt_format=chat: the end-of-turn token
            llm.eos_ids = (*llm.eos_ids, self.collate.eos_id)
        self.eos_ids = set(llm.eos_ids)
        self.decoder = None
        if gen.decode == "static":
            from seller_dist.eval.decode import StaticDecoder

            # compiled: every batch padded to batch_size rows, so one graph serves the whole split
            self.decoder = StaticDecoder(
                llm, compile=gen.compile, pad_rows_to=gen.batch_size if gen.compile else 0
            )
            llm.decoder = self.decoder  # SellerModel.generate ends in llm.generate, which uses it
        self.load_seconds = time.perf_counter() - t0

    def decode(self, ids: list[int]) -> tuple[str, int]:
        """Text up to (not including) the first eos, and the number of tokens generated."""
        cut = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        text_ids, n = (ids, len(ids)) if cut is None else (ids[:cut], cut + 1)
        return self.tokenizer.decode(text_ids, skip_special_tokens=True).strip(), n

    @torch.no_grad()
    def generate_batch(
        self, index: int, records: Sequence[ExampleRecord]
    ) -> tuple[list[Generation], torch.Tensor, int]:
        g = self.gen
        batch = self.collate(records)
        inputs = {
            k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "pad"
        }
        config = GenerationConfig(
            max_new_tokens=g.max_new_tokens,
            do_sample=g.do_sample,
            temperature=g.temperature,
            top_p=g.top_p,
            pointer=g.pointer,
        )
        generator = None
        if g.do_sample:
            generator = torch.Generator(device=self.device).manual_seed(g.seed * 1_000_003 + index)
        out = self.seller.generate(inputs, gen=config, generator=generator)
        tokens = out["tokens"].cpu().tolist()
        attention = out["attention"].float().cpu()
        gens, new_tokens = [], 0
        for r, ids, att in zip(records, tokens, attention, strict=True):
            text, n = self.decode(ids)
            new_tokens += n
            gens.append(
                Generation(
                    key=r.key,
                    user_id=r.user_id,
                    item_id=r.item_id,
                    reference=r.explanation,
                    generated=text,
                    supporting_events=supporting_events(r, att, self.max_history, g.supporting_events),
                    meta=dict(r.meta),
                    system=self.system,
                    reference_source=r.explanation_source,
                )
            )
        c = self.seller.model.cfg
        # back to whole routed-token counts (the adapter sees adapter_tokens per example), so the
        # job's sum over batches is exact whatever the worker count
        load = torch.round(out["expert_load"].double().cpu() * (len(records) * c.adapter_tokens * c.top_k))
        return gens, load, new_tokens

    def run(self, split: str, batches: Sequence[PlannedBatch], references: str = "all") -> GeneratedPart:
        """Generate for the planned batches; `references` real / template keeps only the records of
        that group inside each planned batch (the same records whatever the worker count)."""
        part = GeneratedPart([], load_seconds=self.load_seconds)
        load_total: torch.Tensor | None = None
        for planned, records in read_batches(self.manifest, split, batches, self.storage_cfg):
            records = [r for r in records if reference_kinds.keep(references, r)]
            if not records:
                continue
            t0 = time.perf_counter()
            gens, load, n = self.generate_batch(planned.index, records)
            part.seconds += time.perf_counter() - t0
            part.generations += gens
            part.new_tokens += n
            if load.numel():
                load_total = load if load_total is None else load_total + load
        part.expert_tokens = [] if load_total is None else [float(x) for x in load_total]
        part.compile_fallback = self.decoder.compile_failed if self.decoder is not None else None
        return part


def describe_system(model: Any) -> str:
    """Default report name of a model config: seller, bag, gru, ids, dense or none."""
    if model.adapter == "none":
        return "none"
    if model.prompt == "ids":
        return "ids"
    if model.history_encoder != "transformer":
        return model.history_encoder
    return "dense" if model.adapter == "dense" else "seller"
