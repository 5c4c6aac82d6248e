"""The collator's text invariants with every tokenizer family platform teams bring
(tests/families_zoo.py: byte-level BPE as Llama 3 / Qwen, SentencePiece-style as Llama 2 /
Mistral / Gemma, each with its family's BOS/EOS/pad and special tokens):

- the prompt ids equal the whole prompt tokenized at once by the tokenizer itself (BOS where the
  family puts one, none for Qwen), and a title's ids are the same wherever it stands: the
  SentencePiece prefix marker is put once, at the start of the text, never before each unit;
- labels cover exactly the explanation and the eos;
- text from data holding the literal text of "<|soft|>", "<|eos|>" or the family's own markers
  ("<|eot_id|>", "<|im_start|>", "</s>", "<start_of_turn>", ...) gives no special id, and a model
  on such a batch trains (finite loss, falling).

The same checks run on the real SmolLM2-135M-Instruct tokenizer (case "smollm2": byte-level BPE,
no BOS, ChatML, imported once per session from its packaged GGUF, tests/real_llm_helpers.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from seller_dist.data.collate import IGNORE_INDEX, SOFT_TOKEN, SellerCollator
from tests.conftest import make_dataset
from tests.families_zoo import CONVENTIONS, FAMILY_MATRIX, build_family_llm, build_tokenizer
from tests.real_llm_helpers import REAL_LLM_NAME, REAL_TURN_END
from tests.unit.test_collate import _record

NAMES = sorted(CONVENTIONS)
CHAT_NAMES = [n for n in NAMES if CONVENTIONS[n].chat_template] + [REAL_LLM_NAME]
TITLES = ["Alpha Lamp 12", "Beta Kettle 3", "Gamma (red) drum!", "Café Noir", "12 Rules"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    from seller_dist.data.catalog import ItemCatalog

    root = str(tmp_path_factory.mktemp("families") / "ds")
    make_dataset(root, 8, 1, num_items=20, max_history=4, embedding_dim=6)
    return ItemCatalog.load(root)


def tokenizer_of(name: str, request: pytest.FixtureRequest):
    """A zoo family's tokenizer, or the real LLM's as the job loads it (llm_source)."""
    if name == REAL_LLM_NAME:
        from seller_dist.model.llm_source import load_tokenizer_files

        return load_tokenizer_files(request.getfixturevalue("real_llm_dir"))
    return build_tokenizer(name)


def turn_end(name: str) -> str:
    return REAL_TURN_END if name == REAL_LLM_NAME else CONVENTIONS[name].chat_markers[-1]


@pytest.fixture(scope="module", params=[*NAMES, REAL_LLM_NAME])
def tokenizer(request):
    return tokenizer_of(request.param, request)


def _legacy(tok) -> bool:
    import json

    normalizer = json.loads(tok.backend_tokenizer.to_str()).get("normalizer") or {}
    return "Prepend" in json.dumps(normalizer)


def lab_of(out) -> list[int]:
    labels = out["labels"][0]
    return labels[labels != IGNORE_INDEX].tolist()


def _titled(rec, titles, target="Delta Novel 7"):
    for ev, t in zip(rec.history, titles, strict=False):
        ev.title = t
    rec.item_title = target
    return rec


def test_prompt_ids_equal_the_whole_prompt_tokenized_at_once(tokenizer, catalog):
    K = 3
    col = SellerCollator(tokenizer, catalog, max_history=5, num_soft_tokens=K)
    tok = col.tokenizer
    assert col.pieces_match_text
    for titles in (TITLES[:3], TITLES[2:]):
        rec = _titled(_record("a", 3, explanation="because you liked Beta Kettle 3, a café"), titles)
        out = col([rec])
        text = (
            f"User history: {'; '.join(titles)}. Recommended: {rec.item_title}. Profile:"
            + SOFT_TOKEN * K
            + f" Explanation: {rec.explanation}"
        )
        whole = tok(text)["input_ids"] + [tok.eos_token_id]  # BOS as the tokenizer puts it
        got = out["input_ids"][0].tolist()
        if _legacy(tok):
            # a legacy tokenizer.json (Prepend("▁") normalizer) puts a second "▁" after every special
            # token in whole text, the `legacy=True` quirk transformers replaced: after the soft
            # tokens SELLER reads " Explanation:" as the same text anywhere else (docs/model.md)
            cut = len(got) - len(lab_of(out)) - len(col._suffix)
            assert got[:cut] == whole[:cut]
            assert got[cut:] == col._encode([f" Explanation: {rec.explanation}"])[0] + [tok.eos_token_id]
        else:
            assert got == whole, tok.convert_ids_to_tokens(whole)
        bos = tok("x")["input_ids"][0] == tok.bos_token_id and tok.bos_token_id is not None
        assert (out["input_ids"][0, 0] == tok.bos_token_id) == bos
        labels = out["labels"][0]
        lab = labels[labels != IGNORE_INDEX].tolist()
        assert lab[-1] == tok.eos_token_id and lab[:-1] == col._encode([" " + rec.explanation])[0]
        assert tok.decode(lab[:-1]).strip() == rec.explanation
        for row in out["hist_title_ids"][0][out["hist_mask"][0]]:  # a title's ids are in the prompt
            ids = row[row >= 0].tolist()
            assert any(whole[i : i + len(ids)] == ids for i in range(len(whole))), tok.decode(ids)


def test_generate_mode_prompt_equals_the_train_prompt(tokenizer, catalog):
    rec = _titled(_record("a", 3), TITLES[:3])
    train = SellerCollator(tokenizer, catalog, max_history=5, num_soft_tokens=2)([rec])
    gen = SellerCollator(tokenizer, catalog, max_history=5, num_soft_tokens=2, mode="generate")([rec])
    first = int((train["labels"][0] != IGNORE_INDEX).nonzero()[0])
    assert gen["input_ids"][0].tolist() == train["input_ids"][0, :first].tolist()


def _markers(tok) -> list[str]:
    family = [t for t in tok.all_special_tokens if t != SOFT_TOKEN]
    added = [t.content for t in tok.added_tokens_decoder.values() if t.content != SOFT_TOKEN]
    return list(dict.fromkeys([SOFT_TOKEN, "<|eos|>", "<|endoftext|>", "</s>", "<s>", *family, *added]))


def test_special_token_text_from_data_is_plain_text(tokenizer, catalog):
    col = SellerCollator(
        tokenizer, catalog, max_history=5, num_soft_tokens=2, max_prompt_tokens=1024, max_target_tokens=1024
    )
    tok = col.tokenizer
    marks = " ".join(_markers(tok))
    rec = _titled(_record("a", 3, explanation=f"great shoes {marks} more text"), [f"Lamp {marks}", "Kettle"])
    rec.item_title = f"Drum {SOFT_TOKEN}"
    out = col([rec])
    ids = out["input_ids"][0].tolist()
    specials = set(tok.all_special_ids) | {col.soft_token_id} | set(tok.added_tokens_decoder)
    placed = [i for i in ids if i in specials]
    bos = [tok.bos_token_id] if ids[0] == tok.bos_token_id else []
    assert placed == bos + [col.soft_token_id] * 2 + [col.eos_id]  # only what the collator puts
    labels = out["labels"][0]
    assert tok.decode(labels[labels != IGNORE_INDEX][:-1].tolist()).strip() == rec.explanation
    assert all(t == IGNORE_INDEX for t in out["hist_title_ids"][0].flatten().tolist() if t in specials)


@pytest.mark.parametrize("arch,conv", FAMILY_MATRIX, ids=[f"{a}-{c}" for a, c in FAMILY_MATRIX])
def test_a_batch_with_special_token_text_trains(arch, conv, catalog, tmp_path):
    from seller_dist.config import ModelConfig
    from seller_dist.model.llm import FrozenLLM
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.vocab import ModelVocab

    path = build_family_llm(tmp_path / "llm", arch, conv, init_std=0.2)
    llm = FrozenLLM.from_pretrained(path)
    col = SellerCollator(path, catalog, max_history=5, max_prompt_tokens=1024, max_target_tokens=512)
    marks = " ".join(_markers(col.tokenizer))
    recs = [
        _titled(_record(f"r{i}", 3, explanation=f"because {marks} you liked it"), [f"A {marks}", "B", "C"])
        for i in range(4)
    ]
    batch = {k: v for k, v in col(recs).items() if isinstance(v, torch.Tensor) and k != "pad"}
    vocab = ModelVocab(
        num_items=catalog.num_items,
        attribute_sizes=[len(catalog.attribute_vocab[f]) for f in catalog.attribute_fields],
        text_dim=catalog.embeddings.shape[1],
    )
    cfg = ModelConfig(d_model=32, num_layers=1, num_heads=4, dropout=0.0, adapter="dense")
    torch.manual_seed(0)
    model = SellerModel(cfg, vocab, llm).train()
    opt = torch.optim.AdamW([p for _, p in model.trainable_named_parameters()], lr=0.02)
    losses = []
    for _ in range(8):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", CHAT_NAMES)
def test_chat_prompt_format_equals_the_rendered_chat_tokenized_at_once(name, catalog, request):
    """prompt_format=chat: the prompt is the user turn, the explanation the assistant turn, labels
    end with the token that ends the assistant's turn; ids equal the rendered chat tokenized whole."""
    tok = tokenizer_of(name, request)
    col = SellerCollator(tok, catalog, max_history=5, num_soft_tokens=3, prompt_format="chat")
    rec = _titled(_record("a", 3, explanation="because you liked Beta Kettle 3"), TITLES[:3])
    prompt = f"User history: {'; '.join(TITLES[:3])}. Recommended: {rec.item_title}. Profile:"
    prompt += SOFT_TOKEN * 3 + " Explanation:"
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": rec.explanation}]
    whole = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    got = col([rec])["input_ids"][0].tolist()
    n = got.index(col.soft_token_id) if _legacy(tok) else len(got)  # legacy quirk: see above
    assert got[:n] == whole[:n], (tok.convert_ids_to_tokens(got), tok.convert_ids_to_tokens(whole))
    assert got[-1] == col.eos_id == tok.convert_tokens_to_ids(turn_end(name))
    lab = lab_of(col([rec]))
    assert tok.decode(lab[:-1]) == rec.explanation and lab[-1] == col.eos_id
    gen = SellerCollator(
        tok, catalog, max_history=5, num_soft_tokens=3, prompt_format="chat", mode="generate"
    )
    assert gen([rec])["input_ids"][0].tolist() == got[: len(got) - len(lab)]


def test_chat_prompt_format_needs_a_chat_template(catalog):
    with pytest.raises(ValueError, match="model.prompt_format=chat needs a tokenizer with a chat template"):
        SellerCollator(build_tokenizer("demo"), catalog, max_history=5, prompt_format="chat")


def test_title_token_counts_are_the_pointer_ids_of_each_catalog_title(catalog, request):
    """The real SmolLM2 tokenizer writes every digit as a token: a synthetic-style title of 4 words
    takes 8 tokens, and the title pointer's default 5 positions would cut it (the warning says so)."""
    from seller_dist.model.seller import pointer_cut_warning

    col = SellerCollator(tokenizer_of(REAL_LLM_NAME, request), catalog, max_history=5)
    counts = col.title_token_counts()
    titles = [t for t in catalog.titles[1:] if t]
    assert counts == [len(col._title_units([t])[0].own) for t in titles] and len(counts) == 20
    (qune,) = col._title_units(["Qune Pro Novel 100"])
    assert col.tokenizer.decode(qune.own) == " Qune Pro Novel 100" and len(qune.own) == 8
    # what 5 pointer positions spell: the title without its number (digits are one token each)
    assert [col.tokenizer.decode([i]) for i in qune.own[4:]] == [" ", "1", "0", "0"]
    assert pointer_cut_warning([8] * 9 + [13], 5) == (
        "100% of this dataset's titles are longer than model.pointer_tokens=5 tokens (95th percentile "
        "13, longest 13): the title pointer spells them cut and an explanation that copies it names "
        "no item; set model.pointer_tokens=13 and raise model.num_soft_tokens by as much "
        '(docs/model.md, "Title pointer")'
    )
    assert pointer_cut_warning([8] * 9 + [13], 13) is None
    assert pointer_cut_warning([3] * 19 + [9], 5) is None  # 1 title in 20 cut: under 10 %, no line
