"""SellerCollator + ItemCatalog: the tensor contract the model codes against."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.collate import IGNORE_INDEX, SOFT_TOKEN, SellerCollator, time_bucket
from seller_dist.data.schema import ExampleRecord, HistoryEvent
from seller_dist.data.shards import Manifest
from seller_dist.data.stream import RankLoader, ShardStream
from tests.conftest import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("collate") / "ds")
    make_dataset(root, 24, 2, num_items=20, max_history=4, embedding_dim=6)
    return root


@pytest.fixture(scope="module")
def catalog(dataset):
    return ItemCatalog.load(dataset)


def _record(key="r1", n_hist=3, explanation="because you liked the novel", attrs=None) -> ExampleRecord:
    times = [1000, 1000, 1007, 1_000_000][:n_hist]
    hist = [
        HistoryEvent(f"i{k + 1}", k + 1, t, a, rt, f"title {k + 1}")
        for k, (t, a, rt) in enumerate(
            zip(times, ["view", "purchase", "rate", "click"], [None, 4.5, 2.0, None], strict=False)
        )
    ]
    return ExampleRecord(
        key=key,
        user_id="u1",
        item_id="i5",
        item_idx=5,
        timestamp=1_000_000 + 3,
        history=hist,
        item_attributes=attrs if attrs is not None else {"brand": "globex", "category": "nonexistent"},
        item_title="the target",
        explanation=explanation,
        split="train",
        meta={"cites": 1},
    )


def test_time_bucket_values():
    assert [time_bucket(s) for s in (0, 1, 2, 3, 6, 7, 8, 1022, 1023)] == [1, 2, 2, 3, 3, 4, 4, 10, 11]
    assert time_bucket(10**12) == 31 and time_bucket(10**12, num_buckets=8) == 7
    assert time_bucket(-5) == 1 and time_bucket(7.9) == 4


def test_catalog_tables(dataset, catalog):
    man = Manifest.load(dataset)
    assert catalog.num_items == 20 and catalog.embeddings.shape == (21, 6)
    assert catalog.embeddings.dtype == np.float32 and not catalog.embeddings[0].any()
    assert all(catalog.embeddings[i].any() for i in range(1, 21))
    assert catalog.titles[0] == "" and catalog.titles[3].startswith("item 3 ")
    assert catalog.attribute_fields == ["brand", "category"]
    assert catalog.attribute_vocab == man.data["vocab"]["attribute_fields"]


def test_catalog_without_embeddings(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, 4, 1, num_items=5, embedding_dim=0)
    cat = ItemCatalog.load(root)
    assert cat.embeddings.shape == (6, 0) and cat.embedding_dim == 0


def test_history_and_item_tensors(tiny_tokenizer_dir, catalog):
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=3)
    out = col([_record("a", 3), _record("b", 1, attrs={"brand": "acme", "category": "books"})], [False, True])
    B, L = 2, 5
    for name in ("hist_item", "hist_action", "hist_gap", "hist_target_gap"):
        assert out[name].dtype == torch.long and out[name].shape == (B, L)
    assert out["hist_rating"].dtype == torch.float32 and out["hist_mask"].dtype == torch.bool
    # left padding: newest event in the last column
    assert out["hist_item"].tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 1]]
    assert out["hist_action"].tolist() == [[0, 0, 1, 4, 5], [0, 0, 0, 0, 1]]
    assert out["hist_mask"].tolist() == [[False, False, True, True, True], [False] * 4 + [True]]
    assert out["hist_rating"].tolist() == [[0, 0, 0.0, 4.5, 2.0], [0, 0, 0, 0, 0.0]]
    # gaps 0, 0, 7 s; to the target 1_000_003 - t
    assert out["hist_gap"].tolist() == [[0, 0, 1, 1, 4], [0, 0, 0, 0, 1]]
    want_t = [time_bucket(1_000_003 - t) for t in (1000, 1000, 1007)]
    assert out["hist_target_gap"][0, 2:].tolist() == want_t == [20, 20, 20]
    assert out["item"].tolist() == [5, 5] and out["item"].dtype == torch.long
    brands, cats = catalog.attribute_vocab["brand"], catalog.attribute_vocab["category"]
    assert out["item_attrs"].tolist() == [
        [brands.index("globex") + 1, 0],  # unknown category -> 0
        [brands.index("acme") + 1, cats.index("books") + 1],
    ]

    # each history event carries its item's catalog attributes, indexed like item_attrs; padding is 0
    def attr_row(idx: int) -> list[int]:
        a = catalog.attributes[idx]
        return [brands.index(a["brand"]) + 1 if a.get("brand") in brands else 0] + [
            cats.index(a["category"]) + 1 if a.get("category") in cats else 0
        ]

    assert out["hist_attrs"].dtype == torch.long and out["hist_attrs"].shape == (B, L, 2)
    assert out["hist_attrs"][0].tolist() == [[0, 0], [0, 0]] + [attr_row(i) for i in (1, 2, 3)]
    assert out["hist_attrs"][1].tolist() == [[0, 0]] * 4 + [attr_row(1)]
    assert any(v > 0 for i in (1, 2, 3) for v in attr_row(i))
    assert out["item_text_emb"].shape == (2, 6) and out["item_text_emb"].dtype == torch.float32
    assert torch.equal(out["item_text_emb"][0], torch.from_numpy(catalog.embeddings[5]))
    assert out["keys"] == ["a", "b"] and out["pad"].tolist() == [False, True]
    assert out["references"] == ["because you liked the novel"] * 2 and out["meta"] == [{"cites": 1}] * 2


def test_hist_cited_is_the_column_of_the_event_the_reference_cites(tiny_tokenizer_dir, catalog):
    """cited_offset counts back from the newest event (data_prep/examples.py); the column is in the
    left-padded layout; no reference event, one cut off by max_history, or a bad value give -1."""
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=3, num_soft_tokens=3)
    recs = [_record(f"r{i}", 4) for i in range(6)] + [_record("short", 2)]
    for r, off in zip(recs, [0, 2, 3, -1, True, "1", 1], strict=True):
        r.meta = {"cited_offset": off}
    recs[5].meta = {}
    out = col(recs)
    # L = 3 keeps the 3 newest of 4 events: offset 0 -> column 2, offset 2 -> column 0, offset 3 was cut;
    # the 2-event history sits in columns 1..2, so its offset 1 is column 1
    assert out["hist_cited"].dtype == torch.long
    assert out["hist_cited"].tolist() == [2, 0, -1, -1, -1, -1, 1]
    assert out["hist_item"][6].tolist() == [0, 1, 2] and out["hist_item"][0].tolist() == [2, 3, 4]


def test_stream_pad_rows_get_no_loss_of_either_kind(tiny_tokenizer_dir, catalog):
    from seller_dist.train.step import model_inputs

    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=3, num_soft_tokens=3)
    recs = [_record("a", 3), _record("b", 3)]
    for r in recs:
        r.meta = {"cited_offset": 0}
    out = model_inputs(col(recs, [False, True]), torch.device("cpu"))
    assert out["hist_cited"].tolist() == [2, -1] and "pad" not in out
    assert (out["labels"][1] == IGNORE_INDEX).all() and (out["labels"][0] != IGNORE_INDEX).any()


def test_title_token_tensors_follow_the_events_and_cap_at_max_title_tokens(tiny_tokenizer_dir, catalog):
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, max_title_tokens=3)
    recs = [_record("a", 3), _record("b", 1)]
    recs[1].item_title = "x"
    for mode in ("train", "generate"):
        col.mode = mode
        out = col(recs)
        hist, item = out["hist_title_ids"], out["item_title_ids"]
        assert hist.dtype == item.dtype == torch.long
        titles = ["title 1", "title 2", "title 3", "the target", "x"]
        enc = col.tokenizer([" " + t for t in titles], add_special_tokens=False)  # as the prompt reads them
        want = [ids[:3] for ids in enc["input_ids"]]
        n = max(len(w) for w in want)
        assert hist.shape == (2, 5, n) and item.shape == (2, n) and n <= 3

        def row(ids: list[int], n: int = n) -> list[int]:
            return ids + [-1] * (n - len(ids))

        # left padded like the events: padding rows are all -1
        assert hist[0].tolist() == [[-1] * n] * 2 + [row(w) for w in want[:3]]
        assert hist[1].tolist() == [[-1] * n] * 4 + [row(want[0])]
        assert item.tolist() == [row(want[3]), row(want[4])]
        assert torch.equal((hist >= 0).any(-1), out["hist_mask"])  # a title wherever an event is


def test_tokenizer_padding_and_truncation_settings_never_reach_the_batch(tiny_tokenizer_dir, catalog):
    """transformers 5 leaves a padded call's settings on the Rust backend (and save_pretrained writes
    them): the collate once padded every title to the longest of the call with pad ids."""
    from transformers import AutoTokenizer

    recs = [_record("a", 3), _record("b", 1, explanation="short")]
    clean = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5)(recs)
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok(["x", "a much longer text than x"], padding=True, truncation=True, max_length=3)
    tok.backend_tokenizer.enable_padding(pad_id=tok.pad_token_id, pad_token=tok.pad_token, length=40)
    tok.backend_tokenizer.enable_truncation(max_length=2)
    dirty = SellerCollator(tok, catalog, max_history=5)(recs)
    for k, v in clean.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(dirty[k], v), k
    assert (clean["input_ids"][clean["attention_mask"].bool()] != tok.pad_token_id).all()


def test_sorted_history_text_carries_no_order(tiny_tokenizer_dir, catalog):
    rec = _record("a", 4)
    shuffled = _record("a", 4)
    shuffled.history = [rec.history[i] for i in (2, 0, 3, 1)]
    timed = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5)
    plain = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, history_text="sorted")
    assert not torch.equal(timed([rec])["input_ids"], timed([shuffled])["input_ids"])
    assert torch.equal(plain([rec])["input_ids"], plain([shuffled])["input_ids"])
    text = plain.tokenizer.decode(plain([rec])["input_ids"][0])
    titles = sorted((e.title for e in rec.history), key=lambda t: plain._encode([t])[0])
    assert "User history: " + "; ".join(titles) + ". Recommended:" in text
    with pytest.raises(ValueError, match="history_text must be 'time' or 'sorted'"):
        SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, history_text="random")


def test_train_text_labels_only_on_explanation_and_k_soft_positions(tiny_tokenizer_dir, catalog):
    K = 4
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=K)
    tok = col.tokenizer
    recs = [_record("a", 3), _record("b", 1, explanation="short")]
    out = col(recs)
    ids, attn, labels, soft = out["input_ids"], out["attention_mask"], out["labels"], out["soft_mask"]
    assert ids.shape == attn.shape == labels.shape == soft.shape and soft.dtype == torch.bool
    assert soft.sum(1).tolist() == [K, K]
    assert (ids[soft] == tok.convert_tokens_to_ids(SOFT_TOKEN)).all()
    for b, r in enumerate(recs):
        n = int(attn[b].sum())
        assert attn[b, :n].all() and not attn[b, n:].any()  # right padding
        assert (ids[b, n:] == tok.pad_token_id).all() and (labels[b, n:] == IGNORE_INDEX).all()
        lab = labels[b][labels[b] != IGNORE_INDEX].tolist()
        assert tok.decode(lab) == " " + r.explanation + tok.eos_token
        first = int((labels[b] != IGNORE_INDEX).nonzero()[0])
        assert labels[b, first:n].tolist() == ids[b, first:n].tolist()  # contiguous, through eos
        assert ids[b, 0] == tok.bos_token_id
        titles = "; ".join(e.title for e in r.history)
        want = f"User history: {titles}. Recommended: the target. Profile:" + SOFT_TOKEN * K + " Explanation:"
        assert tok.decode(ids[b, 1:first].tolist()) == want
        # soft positions sit right before " Explanation:"
        assert soft[b].nonzero().flatten().tolist() == list(
            range(first - K - len(col._suffix), first - len(col._suffix))
        )


def test_truncation_drops_oldest_titles_and_caps_the_explanation(tiny_tokenizer_dir, catalog):
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=2)
    full = col([_record("a", 4)], None)
    first = int((full["labels"][0] != IGNORE_INDEX).nonzero()[0])
    limit = first - 2  # room for fewer titles
    short = SellerCollator(
        tiny_tokenizer_dir,
        catalog,
        max_history=5,
        num_soft_tokens=2,
        max_prompt_tokens=limit,
        max_target_tokens=3,
    )
    out = short([_record("a", 4, explanation="because you liked the novel by the same author")])
    tok = short.tokenizer
    p_end = int((out["labels"][0] != IGNORE_INDEX).nonzero()[0])
    assert p_end <= limit
    prompt = tok.decode(out["input_ids"][0, :p_end].tolist())
    assert "title 4" in prompt and "title 3" in prompt and "title 1;" not in prompt  # newest kept
    assert (out["labels"][0] != IGNORE_INDEX).sum() == 3 + 1  # 3 explanation tokens + eos
    with pytest.raises(ValueError, match=r"max_prompt_tokens=5 is smaller than the fixed prompt"):
        SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, max_prompt_tokens=5)


def test_generate_mode_left_pads_the_prompt(tiny_tokenizer_dir, catalog):
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=2, mode="generate")
    tok = col.tokenizer
    out = col([_record("a", 3), _record("b", 1)])
    assert "labels" not in out
    ids, attn = out["input_ids"], out["attention_mask"]
    lens = attn.sum(1).tolist()
    assert lens[0] > lens[1] and ids.shape[1] == lens[0]
    n = lens[1]
    assert not attn[1, : ids.shape[1] - n].any() and attn[1, -n:].all()  # left padding
    assert (ids[1, : ids.shape[1] - n] == tok.pad_token_id).all()
    for b in range(2):
        assert tok.decode(ids[b, -len(col._suffix) :].tolist()) == " Explanation:"
    assert out["soft_mask"].sum(1).tolist() == [2, 2]


def test_collation_inside_loader_workers_matches_in_process(dataset, catalog, tiny_tokenizer_dir):
    vocab = Manifest.load(dataset).data["vocab"]
    col = SellerCollator.for_dataset(vocab, catalog, tiny_tokenizer_dir, num_soft_tokens=2)

    def run(workers):
        stream = ShardStream(dataset, batch_size=5, rank=1, world_size=2, collate_fn=col)
        return list(RankLoader(stream, num_workers=workers).epoch_iter())

    ref, got = run(0), run(2)
    assert len(ref) == len(got) == 3  # 12 samples per rank, batch 5
    for a, b in zip(ref, got, strict=True):
        assert a["keys"] == b["keys"]
        assert a["hist_item"].shape[1] == 4  # L from the manifest
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[k]), k


def prompt_text(rec, soft_tokens: int, eos: str, head: str = "") -> str:
    """The text a training row's ids must equal: the collator's prompt with K soft tokens, the
    explanation and the end token, after `head` (BOS, an instruction)."""
    titles = "; ".join(e.title for e in rec.history)
    return (
        f"{head}User history: {titles}. Recommended: {rec.item_title}. Profile:"
        + SOFT_TOKEN * soft_tokens
        + f" Explanation: {rec.explanation}{eos}"
    )


def test_prompt_ids_equal_the_whole_prompt_tokenized_at_once(tiny_tokenizer_dir, catalog):
    """The frozen LLM learned text tokenized whole: a title after "history:" or "; " is " title"
    (byte-level BPE: a leading-space token), never a bare "title" after a lone space token. Pieces
    tokenized one by one must give the same ids, and each history title's ids (what the title pointer
    copies) must be the ones the prompt uses."""
    K = 3
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=K)
    tok = col.tokenizer
    rec = _record("a", 3, explanation="because you liked title 2")
    out = col([rec])
    whole = tok(prompt_text(rec, K, tok.eos_token, head=tok.bos_token), add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0].tolist() == whole
    assert col.pieces_match_text
    for row in out["hist_title_ids"][0][out["hist_mask"][0]]:
        ids = row[row >= 0].tolist()
        assert any(whole[i : i + len(ids)] == ids for i in range(len(whole))), tok.decode(ids)


def test_an_instruction_leads_the_prompt_and_the_ids_still_equal_the_text_tokenized_whole(
    tiny_tokenizer_dir, catalog
):
    """model.prompt_instruction (the zero-shot of an instruct model asks what to write) goes first;
    the profile's soft tokens stay right before " Explanation:"."""
    ask = "Explain why the recommended item fits this user."
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=2, instruction=ask)
    tok = col.tokenizer
    rec = _record("a", 3, explanation="because you liked title 2")
    text = prompt_text(rec, 2, tok.eos_token, head=f"{tok.bos_token}{ask} ")
    assert col([rec])["input_ids"][0].tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert col.pieces_match_text


def test_a_prefix_space_rule_does_not_shift_units(tiny_tokenizer_dir, catalog):
    """A tokenizer that marks the start of a text (here ByteLevel add_prefix_space, as SentencePiece's
    Metaspace does) marks it once, not before every unit: the prompt equals the text tokenized whole."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    col = SellerCollator(tok, catalog, max_history=5, num_soft_tokens=2)
    assert col.pieces_match_text
    rec = _record("a", 3, explanation="because you liked title 2")
    assert col([rec])["input_ids"][0].tolist() == tok(prompt_text(rec, 2, tok.eos_token))["input_ids"]


def test_a_tokenizer_that_splits_units_unlike_text_is_reported(tiny_tokenizer_dir, catalog, caplog):
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.backend_tokenizer.normalizer = normalizers.Replace("; ", ";")  # the space after ";" goes
    with caplog.at_level("WARNING", logger="seller_dist.data.collate"):
        col = SellerCollator(tok, catalog, max_history=5)
    assert not col.pieces_match_text
    assert "does not split the prompt units" in caplog.text


def test_special_token_text_in_data_stays_text(tiny_tokenizer_dir, catalog):
    """A title or explanation holding the literal text of a special token is encoded as that text:
    only the collator places bos, eos, pad and soft ids (docs/model.md, "Tokenizers")."""
    col = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=2)
    tok = col.tokenizer
    markers = f"{tok.bos_token} {tok.eos_token} {tok.pad_token} {SOFT_TOKEN}"
    rec = _record("a", 3, explanation=f"great shoes {markers} more text")
    rec.history[1].title = f"title {SOFT_TOKEN}{tok.eos_token}"
    rec.item_title = f"the target {tok.eos_token}"
    for mode in ("train", "generate"):
        out = SellerCollator(tiny_tokenizer_dir, catalog, max_history=5, num_soft_tokens=2, mode=mode)([rec])
        ids = out["input_ids"][0][out["attention_mask"][0].bool()].tolist()
        special = {tok.bos_token_id: 1, tok.eos_token_id: int(mode == "train"), col.soft_token_id: 2}
        for token_id, n in special.items():
            assert ids.count(token_id) == n, (mode, tok.convert_ids_to_tokens([token_id]))
        assert tok.pad_token_id not in ids
        assert ids[0] == tok.bos_token_id and ids.count(col.soft_token_id) == out["soft_mask"].sum()
    labels = col([rec])["labels"][0]
    assert tok.decode(labels[labels != IGNORE_INDEX][:-1].tolist()) == " " + rec.explanation
    assert "title <|soft|><|eos|>" in tok.decode(col([rec])["input_ids"][0].tolist())
