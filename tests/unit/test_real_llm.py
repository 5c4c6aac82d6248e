"""The real SmolLM2-135M-Instruct, imported from its packaged GGUF (tests/real_llm_helpers.py), as
FrozenLLM loads it: it answers in English from its chat template (the weights are real, not
noise), and the static-cache decoder (seller_dist/eval/decode.py) writes exactly the tokens Hugging
Face `generate(inputs_embeds=...)` writes on left-padded chat prompts of different lengths, with its
own eos and with eos ids that rows reach part-way (tests/unit/test_eval_decode.py's checks, which run
on tiny random models of every family)."""

from __future__ import annotations

import pytest
import torch

from seller_dist.eval.decode import StaticDecoder
from seller_dist.model.llm import FrozenLLM, GenerationConfig
from tests.unit.test_eval_decode import hf_generate, to_eos, with_early_eos

QUESTIONS = (
    "What is the capital of France?",
    "Say hello.",
    "Name a fruit that is yellow.",
    "Why do people like novels? Answer in one sentence.",
)


@pytest.fixture(scope="module")
def real(real_llm_dir) -> tuple[FrozenLLM, object]:
    from seller_dist.model.llm_source import load_tokenizer_files

    return FrozenLLM.from_pretrained(real_llm_dir), load_tokenizer_files(real_llm_dir)


def chat_prompts(llm: FrozenLLM, tok) -> tuple[torch.Tensor, torch.Tensor]:
    """QUESTIONS as user turns of the model's chat template, left-padded, embedded."""
    enc = [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
        for q in QUESTIONS
    ]
    t = max(map(len, enc))
    ids = torch.full((len(enc), t), llm.pad_id)
    mask = torch.zeros(len(enc), t, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, t - len(e) :] = torch.tensor(e)
        mask[i, t - len(e) :] = 1
    assert len(set(map(len, enc))) > 2  # several padding widths
    with torch.no_grad():
        return llm.embedding(ids), mask


def test_the_imported_llm_answers_in_english(real):
    llm, tok = real
    embeds, mask = chat_prompts(llm, tok)
    out = llm.generate(embeds[:1], mask[:1, :], GenerationConfig(max_new_tokens=10))
    text = tok.decode([t for t in out[0].tolist() if t not in llm.eos_ids])
    assert "Paris" in text, text
    assert llm.family is not None and llm.family.eos_ids == (tok.convert_tokens_to_ids("<|im_end|>"),)


def test_static_decoding_writes_hf_generate_tokens_on_the_real_llm(real):
    llm, tok = real
    embeds, mask = chat_prompts(llm, tok)
    max_new = 8
    gen = GenerationConfig(max_new_tokens=max_new)
    hf = to_eos(hf_generate(llm, embeds, mask, max_new), llm.eos_ids)
    static = StaticDecoder(llm).generate(embeds, mask, gen)
    assert to_eos(static, llm.eos_ids) == hf
    assert torch.equal(static, llm.generate(embeds, mask, gen))

    saved = llm.eos_ids
    try:
        llm.eos_ids = with_early_eos(llm, embeds, mask, max_new)
        hf = to_eos(hf_generate(llm, embeds, mask, max_new), llm.eos_ids)
        assert any(len(r) < max_new for r in hf), "no row ended early: the eos choice is wrong"
        static = StaticDecoder(llm, check_every=3).generate(embeds, mask, gen)
        assert to_eos(static, llm.eos_ids) == hf
    finally:
        llm.eos_ids = saved
