"""Eval-time decoding with a preallocated KV cache and an optionally compiled one-token step.
`StaticDecoder` (`eval.generation.decode: static`) keeps `FrozenLLM.generate`'s contract and greedy tokens,
but reuses one transformers `StaticCache` across batches and runs each new token through one fixed-shape step,
so a large LLM's decode on a GPU is not bound by per-step allocation and kernel launches and one
`torch.compile`d graph (CUDA graphs) serves the whole split; a step that fails to compile falls back to eager
decoding (docs/evaluation.md, "The eval job").
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from seller_dist.model.llm import FrozenLLM, GenerationConfig

__all__ = ["StaticDecoder", "compiler_failure"]

log = logging.getLogger(__name__)


def _compiler_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions torch.compile raises when it cannot compile a function (imported defensively:
    these are private modules). Dynamo's own (graph breaks under fullgraph, tracing failures) and
    every backend failure are TorchDynamoException (BackendCompilerFailed, InductorError); inductor's
    C++/lowering errors may surface unwrapped."""
    types: list[type[BaseException]] = []
    try:
        from torch._dynamo import exc as dynamo_exc

        types.append(dynamo_exc.TorchDynamoException)
    except (ImportError, AttributeError):  # pragma: no cover - every supported torch has it
        pass
    try:
        from torch._inductor import exc as inductor_exc

        for name in (
            "CppCompileError",
            "CppWrapperCodegenError",
            "InvalidCxxCompiler",
            "OperatorIssue",
            "SubgraphLoweringException",
        ):
            t = getattr(inductor_exc, name, None)
            if isinstance(t, type) and issubclass(t, BaseException):
                types.append(t)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def compiler_failure(e: BaseException) -> str | None:
    """The one-line reason when `e` says torch.compile could not compile the step, else None: an out
    of memory (even one raised while compiling) or any other error is the run's, not the compiler's."""
    chain: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and x not in chain:
        chain.append(x)
        x = getattr(x, "inner_exception", None) or x.__cause__
    if not isinstance(e, _compiler_error_types()) or any(
        isinstance(c, torch.OutOfMemoryError) for c in chain
    ):
        return None
    inner = chain[-1]
    line = next((ln.strip() for ln in str(inner).splitlines() if ln.strip()), "")
    what = type(e).__name__ if inner is e else f"{type(e).__name__}: {type(inner).__name__}"
    return f"{what}: {line}"[:300] if line else what


class StaticDecoder:
    """Decodes for one FrozenLLM; `generate` has FrozenLLM.generate's signature and result."""

    def __init__(
        self,
        llm: FrozenLLM,
        compile: bool = False,
        mode: str | None = None,
        backend: str = "inductor",
        fullgraph: bool = False,
        pad_rows_to: int = 0,
        cache_multiple: int = 64,
        check_every: int | None = None,
    ):
        self.llm = llm
        self.model = llm.model
        self.compile, self.mode, self.backend, self.fullgraph = compile, mode, backend, fullgraph
        self.pad_rows_to = pad_rows_to
        self.cache_multiple = max(1, cache_multiple)
        self.check_every = check_every
        self.cache: Any = None
        self._cache_key: tuple[int, int, torch.dtype, torch.device] | None = None
        self._compiled: Any = None
        self.compile_failed: str | None = None  # why compile was turned off (a fallback, logged)
        self._compiled_ok = False  # the compiled step has run once

    # ------------------------------------------------------------------ cache
    def _get_cache(self, rows: int, length: int, dtype: torch.dtype, device: torch.device) -> Any:
        """A StaticCache of `rows` x at least `length` slots: the current one (reset) when it fits,
        else a new one; lengths only grow, so a split of varying prompt lengths compiles few graphs."""
        from transformers import StaticCache

        key = self._cache_key
        if key is not None and key[0] == rows and key[1] >= length and key[2:] == (dtype, device):
            self.cache.reset()  # in place: the tensors keep their addresses, which CUDA graphs need
            return self.cache
        if key is not None and key[0] == rows:
            length = max(length, key[1])
        length = -(-length // self.cache_multiple) * self.cache_multiple  # rounded up
        self.cache = None  # free the old tensors before allocating the new ones
        self.cache = StaticCache(config=self.model.config, max_cache_len=length)
        self._cache_key = (rows, length, dtype, device)
        self._compiled_ok = False  # a new cache means a recompile: guarded like the first one
        return self.cache

    # ------------------------------------------------------------------ step
    def _forward_step(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=self.cache,
            use_cache=True,
        )
        return out.logits[:, -1].float()

    def _step_fn(self, device: torch.device) -> Any:
        if not self.compile or self.compile_failed:
            return self._forward_step
        if self._compiled is None:
            mode = self.mode
            if mode is None and self.backend == "inductor":
                mode = "reduce-overhead" if device.type == "cuda" else "default"
            kwargs: dict[str, Any] = {"backend": self.backend, "fullgraph": self.fullgraph}
            if mode is not None:
                kwargs["mode"] = mode
            self._compiled = torch.compile(self._forward_step, **kwargs)
        return self._compiled

    def _run_step(self, fn: Any, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if fn is self._forward_step:
            return fn(ids, pos, mask)
        if ids.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
        return fn(ids, pos, mask)

    # ------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        gen: GenerationConfig,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue LEFT-padded prompts given as embeddings [B, T, H] with mask [B, T]. Returns new
        token ids [B, <=max_new_tokens] (pad after a row's eos), as FrozenLLM.generate."""
        b, t = attention_mask.shape
        device = embeds.device
        n_new = int(gen.max_new_tokens)
        if n_new <= 0 or b == 0:
            return torch.zeros((b, 0), dtype=torch.long, device=device)
        rows = max(b, self.pad_rows_to)
        mask = attention_mask.long()
        if rows > b:  # copies of the last row: one compiled shape for every batch of the split
            extra = rows - b
            embeds = torch.cat([embeds, embeds[-1:].expand(extra, -1, -1)])
            mask = torch.cat([mask, mask[-1:].expand(extra, -1)])
        pos = self.llm.positions(mask)  # cumsum - 1, as FrozenLLM and HF generate(inputs_embeds=...)
        cache = self._get_cache(rows, t + n_new, embeds.dtype, device)
        length = self._cache_key[1]
        # one mask over the whole cache per batch: prompt padding 0, every later slot 1 (slots not written
        # yet are hidden by the causal mask, which follows the cache's own write position)
        full = torch.ones((rows, length), dtype=torch.long, device=device)
        full[:, :t] = mask
        # the prompt runs eagerly; logits of its last position only (no [B, T, vocab] tensor)
        kwargs = {"logits_to_keep": 1} if self.llm._keeps_logits else {}
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=full,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        logits = out.logits[:, -1].float()
        del out
        eos = torch.tensor(self.llm.eos_ids or (-1,), dtype=torch.long, device=device)
        pad = torch.full((rows,), self.llm.pad_id, dtype=torch.long, device=device)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        tokens = torch.empty((rows, n_new), dtype=torch.long, device=device)
        last_pos = pos[:, -1:]
        # eos is checked every `every` steps (a host sync each); the columns after the step where all rows
        # finished are cut below, so the result does not depend on it
        every = self.check_every or (4 if device.type == "cuda" else 1)
        step_fn = self._step_fn(device)
        steps = 0
        for step in range(n_new):
            nxt = FrozenLLM._pick(logits[:b], gen, generator)  # FrozenLLM's generator calls, real rows only
            if rows > b:
                nxt = torch.cat([nxt, nxt[-1:].expand(rows - b)])
            nxt = torch.where(done, pad, nxt)
            tokens[:, step] = nxt
            done = done | torch.isin(nxt, eos)
            steps = step + 1
            if steps == n_new:
                break
            if not gen.sync_ranks and steps % every == 0 and bool(done[:b].all()):
                break
            last_pos = last_pos + 1
            ids = nxt[:, None]
            if step_fn is self._forward_step or self._compiled_ok:
                logits = self._run_step(step_fn, ids, last_pos, full)
                continue
            saved = self._cache_lengths()
            try:  # the first compiled step: a compile this stack cannot do falls back, logged
                logits = self._run_step(step_fn, ids, last_pos, full)
                self._compiled_ok = True
            except Exception as e:
                reason = compiler_failure(e)
                if reason is None:  # an OOM or a real bug: never hidden behind a slower decode
                    raise
                self._fallback(reason, saved)
                step_fn = self._forward_step
                logits = self._forward_step(ids, last_pos, full)
        out_tokens = tokens[:b, :steps]
        finished = (
            torch.isin(out_tokens, eos).cummax(dim=1).values.all(dim=0)
            if out_tokens.shape[1]
            else out_tokens.new_zeros(0, dtype=torch.bool)
        )
        if not gen.sync_ranks and bool(finished.any()):
            out_tokens = out_tokens[:, : int(finished.nonzero()[0]) + 1]
        return out_tokens

    def _cache_lengths(self) -> list[tuple[Any, int | None]]:
        return [
            (layer.cumulative_length.clone(), getattr(layer, "cumulative_length_int", None))
            for layer in self.cache.layers
        ]

    def _fallback(self, reason: str, saved: list[tuple[Any, int | None]]) -> None:
        """The first compiled step failed to compile (a compile this stack cannot do): put the
        cache's write positions back (the step writes its slot before reading it, so the eager rerun
        overwrites anything half written) and decode without compile from here on (logged, and kept
        in `compile_failed`: the eval report's generation.compile_fallback, the benchmark's JSON)."""
        for layer, (length, length_int) in zip(self.cache.layers, saved, strict=True):
            layer.cumulative_length.copy_(length)
            if length_int is not None:
                layer.cumulative_length_int = length_int
        self.compile_failed = reason
        log.warning("decode: compiled step failed, decoding without compile: %s", self.compile_failed)
