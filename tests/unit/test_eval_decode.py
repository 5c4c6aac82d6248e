"""The static-cache decoder (seller_dist.eval.decode) writes the tokens Hugging Face
`generate(inputs_embeds=..., attention_mask=...)` writes, greedy, on tiny random models of every
family the project supports: left padding with prompts of different lengths (longer than the
sliding window of mistral / gemma2 / gemma3), Gemma 2's soft-capping, several eos ids, rows ending
early, a cache reused across batches, batches padded to a fixed row count, and the one-token step
traced by torch.compile (backend "eager": dynamo's graph capture without inductor's C++ build)."""

from __future__ import annotations

import pytest
import torch

from seller_dist.eval.decode import StaticDecoder
from seller_dist.model.llm import FrozenLLM, GenerationConfig
from tests.families_zoo import DEFAULT_CONVENTION, build_model, build_tokenizer

ARCHS = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3")
WINDOW = 8  # sliding window of mistral / gemma2 / gemma3: every prompt below is longer
LENGTHS = (20, 13, 9, 17, 20)  # real prompt lengths, left-padded to 20


@pytest.fixture(scope="module")
def llms() -> dict[str, FrozenLLM]:
    import transformers

    transformers.logging.set_verbosity_error()
    out = {}
    for arch in ARCHS:
        conv = DEFAULT_CONVENTION[arch]
        # init_std 0.3: peaked random logits, so greedy picks are not near-ties of float noise
        model = build_model(arch, build_tokenizer(conv), conv, seed=0, init_std=0.3, sliding_window=WINDOW)
        eos = model.config.eos_token_id
        eos = list(eos) if isinstance(eos, list) else [eos]
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else eos[0]
        llm = FrozenLLM(model, pad_id=pad, eos_id=eos[0])
        llm.eos_ids = tuple(eos)
        out[arch] = llm
    return out


def prompts(llm: FrozenLLM, lengths=LENGTHS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(5, llm.embedding.num_embeddings, (len(lengths), t), generator=g)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, t - n :] = 1
    with torch.no_grad():
        embeds = llm.embedding(ids.masked_fill(mask == 0, llm.pad_id))
    return embeds, mask


def hf_generate(llm: FrozenLLM, embeds, mask, max_new: int) -> torch.Tensor:
    with torch.no_grad():
        return llm.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=llm.pad_id,
            eos_token_id=list(llm.eos_ids),
        )


def to_eos(tokens: torch.Tensor, eos_ids) -> list[list[int]]:
    out = []
    for row in tokens.tolist():
        cut = next((i for i, t in enumerate(row) if t in eos_ids), None)
        out.append(row if cut is None else row[: cut + 1])
    return out


def with_early_eos(llm: FrozenLLM, embeds, mask, max_new: int) -> tuple[int, ...]:
    """Two eos ids that rows really produce part-way: the token the first row writes at step 3 and
    the one the third row writes at step 5 (the family's own eos ids are never sampled at random)."""
    free = llm.generate(embeds, mask, GenerationConfig(max_new_tokens=max_new))
    return (int(free[0, 3]), int(free[2, 5]))


@pytest.mark.parametrize("arch", ARCHS)
def test_static_decoding_writes_hf_generate_tokens(llms, arch):
    llm = llms[arch]
    embeds, mask = prompts(llm)
    max_new = 12
    gen = GenerationConfig(max_new_tokens=max_new)
    hf = to_eos(hf_generate(llm, embeds, mask, max_new), llm.eos_ids)
    dynamic = llm.generate(embeds, mask, gen)
    static = StaticDecoder(llm).generate(embeds, mask, gen)
    assert to_eos(static, llm.eos_ids) == hf
    assert torch.equal(static, dynamic)  # same shape and pads as FrozenLLM.generate

    saved = llm.eos_ids
    try:
        llm.eos_ids = with_early_eos(llm, embeds, mask, max_new)
        hf = to_eos(hf_generate(llm, embeds, mask, max_new), llm.eos_ids)
        assert any(len(r) < max_new for r in hf), "no row ended early: the eos choice is wrong"
        dynamic = llm.generate(embeds, mask, gen)
        for check_every in (1, 3):  # where the host checks for "all done" must not change the result
            static = StaticDecoder(llm, check_every=check_every).generate(embeds, mask, gen)
            assert to_eos(static, llm.eos_ids) == hf
            assert torch.equal(static, dynamic)
    finally:
        llm.eos_ids = saved


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_compiled_step_with_padded_rows_and_a_reused_cache(llms, arch):
    """One decoder over batches of different sizes and prompt lengths: rows padded to 6, the cache
    grown once and then reset in place, the step captured by dynamo as one graph (fullgraph)."""
    llm = llms[arch]
    dec = StaticDecoder(llm, compile=True, backend="eager", fullgraph=True, pad_rows_to=6, cache_multiple=16)
    gen = GenerationConfig(max_new_tokens=10)
    caches = []
    for lengths, seed in (((12, 7, 12), 1), (LENGTHS, 2), ((5, 11), 3)):
        embeds, mask = prompts(llm, lengths, seed)
        out = dec.generate(embeds, mask, gen)
        assert dec.compile_failed is None
        assert to_eos(out, llm.eos_ids) == to_eos(hf_generate(llm, embeds, mask, 10), llm.eos_ids)
        assert torch.equal(out, llm.generate(embeds, mask, gen))
        caches.append((id(dec.cache), dec._cache_key[:2]))
    # 12 + 10 -> 32 slots; 20 + 10 -> 32 (reused); 11 + 10 -> 32 (reused): one cache, 6 rows
    assert caches[0] == caches[1] == caches[2]
    assert caches[0][1] == (6, 32)


def test_sampling_draws_what_frozen_llm_draws(llms):
    llm = llms["llama"]
    embeds, mask = prompts(llm)
    gen = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=0.8, top_p=0.9)
    a = llm.generate(embeds, mask, gen, torch.Generator().manual_seed(5))
    b = StaticDecoder(llm, pad_rows_to=8).generate(embeds, mask, gen, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_sync_ranks_runs_every_step(llms):
    llm = llms["qwen2"]
    embeds, mask = prompts(llm)
    saved = llm.eos_ids
    try:
        llm.eos_ids = with_early_eos(llm, embeds, mask, 8)
        synced = GenerationConfig(max_new_tokens=8, sync_ranks=True)
        out = StaticDecoder(llm).generate(embeds, mask, synced)
        assert out.shape[1] == 8 and torch.equal(out, llm.generate(embeds, mask, synced))
    finally:
        llm.eos_ids = saved


def backend_that_cannot_compile(gm, example_inputs):
    """A torch.compile backend that refuses the graph, as a backend without a compiler for this
    stack does: dynamo raises BackendCompilerFailed from the first call."""
    raise NotImplementedError("no kernel for this graph on this stack\n(details on a second line)")


def backend_whose_graph_runs_out_of_memory(gm, example_inputs):
    """Compiles fine; the compiled step then fails as a step does when the device is full."""

    def run(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return run


def backend_out_of_memory_while_compiling(gm, example_inputs):
    """Runs out of memory inside the compiler (autotuning allocates): dynamo wraps it in
    BackendCompilerFailed, but it is the run's memory, not a compile this stack cannot do."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")


def test_a_step_that_fails_to_compile_falls_back_and_says_why(llms):
    llm = llms["qwen2"]
    embeds, mask = prompts(llm)
    gen = GenerationConfig(max_new_tokens=8)
    dec = StaticDecoder(llm, compile=True, backend=backend_that_cannot_compile)
    out = dec.generate(embeds, mask, gen)
    assert dec.compile_failed == (
        "BackendCompilerFailed: NotImplementedError: no kernel for this graph on this stack"
    )
    assert torch.equal(out, llm.generate(embeds, mask, gen))  # the eager tokens, from the same cache
    # later batches decode eagerly at once: the failed compile is not retried
    assert dec._step_fn(embeds.device) == dec._forward_step
    assert torch.equal(dec.generate(embeds, mask, gen), out)


@pytest.mark.parametrize(
    "backend", [backend_whose_graph_runs_out_of_memory, backend_out_of_memory_while_compiling]
)
def test_an_out_of_memory_in_the_compiled_step_is_raised_not_hidden(llms, backend):
    llm = llms["qwen2"]
    embeds, mask = prompts(llm)
    dec = StaticDecoder(llm, compile=True, backend=backend)
    with pytest.raises(RuntimeError, match="CUDA out of memory") as e:
        dec.generate(embeds, mask, GenerationConfig(max_new_tokens=8))
    if backend is backend_out_of_memory_while_compiling:  # dynamo's wrapper, raised as it came
        assert isinstance(e.value, torch._dynamo.exc.BackendCompilerFailed)
        assert isinstance(e.value.inner_exception, torch.OutOfMemoryError)
    else:
        assert isinstance(e.value, torch.OutOfMemoryError)
    assert dec.compile_failed is None


def test_a_bug_in_the_compiled_step_is_raised_not_hidden(llms, monkeypatch):
    """A RuntimeError from the compiled step that is no compile error (a real bug, a device fault)
    propagates: the compiled step itself is replaced by one that raises it."""
    llm = llms["qwen2"]
    embeds, mask = prompts(llm)
    dec = StaticDecoder(llm, compile=True, backend="eager")

    def broken_step(ids, pos, mask):
        raise RuntimeError("index 70000 is out of bounds for dimension 0 with size 512")

    compiled = dec._step_fn(embeds.device)
    assert compiled is not dec._forward_step
    monkeypatch.setattr(dec, "_compiled", broken_step)
    with pytest.raises(RuntimeError, match="index 70000 is out of bounds"):
        dec.generate(embeds, mask, GenerationConfig(max_new_tokens=8))
    assert dec.compile_failed is None


def test_generation_options_check_the_decode_switch():
    from seller_dist.config import ConfigError, GenerationOptions

    GenerationOptions(decode="static", compile=True).validate()
    with pytest.raises(ConfigError, match="compile needs eval.generation.decode=static"):
        GenerationOptions(compile=True).validate()
    with pytest.raises(ConfigError, match="decode must be"):
        GenerationOptions(decode="paged").validate()  # type: ignore[arg-type]
