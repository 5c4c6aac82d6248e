"""families_zoo: tiny random LLMs of the deployed families, with each family's tokenizer conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seller_dist.model.llm import SOFT_TOKEN
from tests.families_zoo import (
    ARCHS,
    CONVENTIONS,
    DEFAULT_CONVENTION,
    FAMILY_MATRIX,
    TIED_BY_DEFAULT,
    build_family_llm,
    build_model,
    build_tokenizer,
    save_family_checkpoint,
)

# more tokens than the 32-token sliding windows, so mistral's/gemma's window is exercised
LONG_TEXT = "the kettle matches your kitchen purchases and the garden rake fits your recent garden views " * 2
TEXTS = ["Hello world", "Explanation: because you liked item 7 rake", "Café — 東京 🙂", "a  b\tc\nd"]
IDS = [f"{a}-{c}" for a, c in FAMILY_MATRIX]


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _weights(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(arch, convention) -> (folder, logits before save, input ids) for every FAMILY_MATRIX entry."""
    _quiet_transformers()
    root = tmp_path_factory.mktemp("families")
    out = {}
    for arch, conv in FAMILY_MATRIX:
        tok = build_tokenizer(conv)
        model = build_model(arch, tok, conv, seed=0)
        ids = torch.tensor([tok(LONG_TEXT)["input_ids"]])
        assert ids.shape[1] > 32
        with torch.no_grad():
            logits = model(ids).logits
        folder = save_family_checkpoint(model, tok, root / f"{arch}-{conv}")
        out[(arch, conv)] = (folder, logits, ids)
    return out


def test_matrix_covers_every_arch_and_both_styles():
    assert (
        {a for a, _ in FAMILY_MATRIX}
        == set(ARCHS)
        == {"llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3"}
    )
    assert {CONVENTIONS[c].style for _, c in FAMILY_MATRIX} == {"byte_level", "sentencepiece"}
    assert ("llama", "llama2") in FAMILY_MATRIX  # Llama 2: llama arch, SentencePiece-style tokenizer
    sp = {
        (CONVENTIONS[c].legacy, CONVENTIONS[c].prefix)
        for _, c in FAMILY_MATRIX
        if CONVENTIONS[c].style != "byte_level"
    }
    assert sp == {(True, "first"), (False, "first"), (False, "none")}  # every SentencePiece variant
    assert all(DEFAULT_CONVENTION[a] in CONVENTIONS for a in ARCHS)


@pytest.mark.parametrize(("arch", "conv"), FAMILY_MATRIX, ids=IDS)
def test_checkpoint_reloads_sharded_with_equal_logits(saved, arch, conv):
    from transformers import AutoModelForCausalLM

    folder, logits, ids = saved[(arch, conv)]
    index = json.loads(Path(folder, "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2
    assert all(Path(folder, s).exists() for s in shards)
    assert not Path(folder, "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, logits)

    cfg = model.config
    assert cfg.model_type == {"llama": "llama", "gemma3": "gemma3_text"}.get(arch, arch)
    assert cfg.num_hidden_layers == 2 and cfg.hidden_size == 64
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # GQA
    tied = TIED_BY_DEFAULT[arch]
    assert cfg.tie_word_embeddings is tied
    same = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert same is tied
    if arch == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    if arch in ("mistral", "gemma2", "gemma3"):
        assert cfg.sliding_window == 32
    if arch == "gemma2":
        assert (cfg.final_logit_softcapping, cfg.attn_logit_softcapping) == (30.0, 50.0)
    if arch in ("gemma2", "gemma3"):
        assert set(cfg.layer_types) == {"sliding_attention", "full_attention"}


@pytest.mark.parametrize(("arch", "conv"), FAMILY_MATRIX, ids=IDS)
def test_tokenizer_conventions(saved, arch, conv):
    from transformers import AutoConfig, AutoTokenizer

    folder = saved[(arch, conv)][0]
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = AutoConfig.from_pretrained(folder)
    c = CONVENTIONS[conv]
    assert tok.is_fast and tok.backend_tokenizer is not None
    assert cfg.vocab_size == len(tok)

    # BOS exactly where the family adds it
    ids = tok("Hello world")["input_ids"]
    bare = tok("Hello world", add_special_tokens=False)["input_ids"]
    if c.add_bos:
        assert tok.bos_token == c.bos and ids == [tok.bos_token_id, *bare]
    else:
        assert tok.bos_token is None and ids == bare
    assert tok.eos_token == c.eos and tok.eos_token_id is not None
    assert tok.pad_token == c.pad
    if conv in ("llama3", "llama2", "mistral"):
        assert tok.pad_token is None and cfg.pad_token_id is None
    if conv == "qwen2":
        assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    if conv == "llama3":
        assert cfg.eos_token_id == tok.convert_tokens_to_ids(["<|end_of_text|>", "<|eot_id|>"])
        assert cfg.bos_token_id == tok.bos_token_id
    elif c.config_eos:
        assert cfg.eos_token_id == tok.convert_tokens_to_ids(c.config_eos[0])
    if c.config_pad:
        assert cfg.pad_token_id == tok.pad_token_id

    # the soft token: one special id, never split
    soft = tok.convert_tokens_to_ids(SOFT_TOKEN)
    assert soft is not None and soft != tok.unk_token_id and soft in tok.all_special_ids
    assert tok(SOFT_TOKEN, add_special_tokens=False)["input_ids"] == [soft]
    assert tok(f"ab{SOFT_TOKEN}cd", add_special_tokens=False)["input_ids"].count(soft) == 1

    # lossless for ASCII and non-ASCII text; SentencePiece-style via byte fallback, never <unk>
    for text in TEXTS:
        enc = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(enc) == text
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
        if tok.unk_token_id is not None:
            assert tok.unk_token_id not in enc
    if c.style == "sentencepiece":
        assert "<0xE6>" in tok.convert_ids_to_tokens(tok("東", add_special_tokens=False)["input_ids"])

    # chat template
    if c.chat_template is None:
        assert conv == "demo"
        return
    chat = [{"role": "user", "content": "Which lamp?"}, {"role": "assistant", "content": "The brass one."}]
    rendered = tok.apply_chat_template(chat, tokenize=False)
    assert isinstance(rendered, str) and "Which lamp?" in rendered and "The brass one." in rendered
    for marker in c.chat_markers:
        assert marker in rendered, (marker, rendered)


def _model_input(tok, text: str) -> str:
    """What the BPE model receives for `text` in a standalone encode: its tokens joined, byte tokens
    decoded (independent of which merges were learned)."""
    tokens = tok.backend_tokenizer.encode(text, add_special_tokens=False).tokens
    out, pending = [], bytearray()
    for t in tokens:
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            pending.append(int(t[3:5], 16))
            continue
        out.append(pending.decode("utf-8"))
        pending.clear()
        out.append(t)
    out.append(pending.decode("utf-8"))
    return "".join(out)


@pytest.mark.parametrize(
    ("conv", "hello_world", "space_hello"),
    [
        ("llama2", "▁Hello▁world", "▁▁Hello"),  # legacy: Prepend("▁") normalizer + the space
        ("mistral", "▁Hello▁world", "▁Hello"),  # Metaspace(first): no second "▁" before a space
        ("gemma", "Hello▁world", "▁Hello"),  # no prefix at all
        ("llama3", "HelloĠworld", "ĠHello"),  # byte-level: no prefix rule
        ("qwen2", "HelloĠworld", "ĠHello"),
    ],
)
def test_prefix_behaviour_of_a_standalone_encode(conv, hello_world, space_hello):
    tok = build_tokenizer(conv)
    assert _model_input(tok, "Hello world") == hello_world
    assert _model_input(tok, " Hello") == space_hello


def test_sentencepiece_merges_never_cross_a_word_boundary():
    for conv in ("llama2", "mistral", "gemma"):
        spec = json.loads(build_tokenizer(conv).backend_tokenizer.to_str())
        merges = spec["model"]["merges"]
        assert merges and spec["model"]["byte_fallback"] is True
        assert all("▁" not in (m[1] if isinstance(m, list) else m.split(" ")[1]) for m in merges)
        vocab = spec["model"]["vocab"]
        assert all(f"<0x{i:02X}>" in vocab for i in range(256))
        head = CONVENTIONS[conv].special_tokens
        assert [vocab[t] for t in head] == list(range(len(head)))  # family specials first, as published


def test_build_family_llm_is_deterministic(tmp_path):
    _quiet_transformers()
    for arch in ("llama", "gemma3"):
        a = build_family_llm(tmp_path / f"{arch}-a", arch, seed=3)
        b = build_family_llm(tmp_path / f"{arch}-b", arch, seed=3)
        c = build_family_llm(tmp_path / f"{arch}-c", arch, seed=4)
        assert Path(a, "tokenizer.json").read_bytes() == Path(b, "tokenizer.json").read_bytes()
        wa, wb, wc = _weights(a), _weights(b), _weights(c)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    # the default tokenizer per arch, and an explicit one
    cfg = json.loads(Path(tmp_path, "llama-a", "tokenizer_config.json").read_text())
    assert cfg["bos_token"] == "<|begin_of_text|>"
    d = build_family_llm(tmp_path / "llama2", "llama", "llama2", tied=True)
    assert json.loads(Path(d, "config.json").read_text())["tie_word_embeddings"] is True
    assert json.loads(Path(d, "tokenizer_config.json").read_text())["bos_token"] == "<s>"


def test_published_class_loads_with_the_family_tokenizer_class(tmp_path):
    from transformers import AutoTokenizer

    _quiet_transformers()
    folder = build_family_llm(tmp_path / "gemma", "gemma2", published_class=True)
    assert (
        json.loads(Path(folder, "tokenizer_config.json").read_text())["tokenizer_class"] == "GemmaTokenizer"
    )
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok("Hello world")["input_ids"][0] == tok.bos_token_id
    assert tok.decode(tok("Café — 東京 🙂", add_special_tokens=False)["input_ids"]) == "Café — 東京 🙂"


def test_init_std_widens_random_logits():
    tok = build_tokenizer("qwen2")
    ids = torch.tensor([tok(LONG_TEXT)["input_ids"]])
    with torch.no_grad():
        narrow = build_model("qwen2", tok, "qwen2").eval()(ids).logits.std()
        wide = build_model("qwen2", tok, "qwen2", init_std=0.5).eval()(ids).logits.std()
    assert wide > 5 * narrow


def test_unknown_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        build_family_llm(tmp_path, "gpt2")
    with pytest.raises(ValueError, match="convention"):
        build_tokenizer("falcon")
