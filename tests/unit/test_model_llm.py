"""The frozen LLM wrapper and the assembled SellerModel on a tiny local Llama (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F

from seller_dist.config import ModelConfig
from seller_dist.model.llm import FrozenLLM, GenerationConfig, resolve_llm_path
from seller_dist.model.seller import SellerModel, cited_event_loss
from seller_dist.model.synthetic import synthetic_batch
from seller_dist.model.vocab import ModelVocab
from tests.model_helpers import left_pad, pad_left, tiny_model_config
from tests.tiny_llm import token_ids_of

VOCAB = ModelVocab(num_items=30, attribute_sizes=[5, 4], text_dim=8, num_users=10)


@pytest.fixture(scope="module")
def llm(tiny_llm_dir: str) -> FrozenLLM:
    return FrozenLLM.from_pretrained(tiny_llm_dir)


def cfg(**kw) -> ModelConfig:
    return tiny_model_config(**kw)


def build(llm: FrozenLLM, **kw) -> tuple[SellerModel, torch.nn.Module | None]:
    torch.manual_seed(0)
    m = SellerModel(cfg(**kw), VOCAB, llm).eval()
    return m, (m.make_moe() if m.cfg.adapter == "moe" else None)


def batch(llm: FrozenLLM, b: int = 5, seed: int = 0, mode: str = "train") -> dict[str, torch.Tensor]:
    return synthetic_batch(VOCAB, token_ids_of(llm), 8, b, 6, seed=seed, mode=mode)


def pad_text_right(b: dict[str, torch.Tensor], extra: int, pad: int) -> dict[str, torch.Tensor]:
    out = dict(b)
    for k, fill in (("input_ids", pad), ("attention_mask", 0), ("labels", -100), ("soft_mask", False)):
        x = b[k]
        out[k] = torch.cat([x, torch.full((x.shape[0], extra), fill, dtype=x.dtype)], dim=1)
    return out


def test_loaded_llm_is_frozen_and_stays_in_eval(llm):
    assert all(not p.requires_grad for p in llm.parameters())
    m, _ = build(llm)
    m.train()
    assert m.training and not llm.model.training
    assert llm.soft_id is not None and llm.eos_id is not None


def test_soft_vectors_land_in_order_at_soft_positions(llm):
    b = batch(llm)
    soft = torch.randn(5, 8, llm.hidden_size)
    emb = llm.embed_with_soft(b["input_ids"], b["soft_mask"], soft)
    plain = llm.embedding(b["input_ids"])
    for i in range(5):
        pos = b["soft_mask"][i].nonzero().squeeze(1)
        torch.testing.assert_close(emb[i, pos], soft[i])
        keep = ~b["soft_mask"][i]
        torch.testing.assert_close(emb[i, keep], plain[i, keep])
    bad = b["soft_mask"].clone()
    bad[0, 0] = True
    with pytest.raises(ValueError, match=r"exactly K=8 positions per row .* got \[9, 8, 8, 8, 8\]"):
        llm.embed_with_soft(b["input_ids"], bad, soft)


def test_loss_is_cross_entropy_on_label_tokens_only(llm):
    b = batch(llm)
    emb = llm.embed_with_soft(b["input_ids"], b["soft_mask"], torch.randn(5, 8, llm.hidden_size))
    loss = llm.lm_loss(emb, b["attention_mask"], b["labels"])
    logits = llm.model(inputs_embeds=emb, attention_mask=b["attention_mask"]).logits
    terms = []
    for i in range(5):
        for t in range(1, b["labels"].shape[1]):
            if b["labels"][i, t] != -100:
                terms.append(F.cross_entropy(logits[i, t - 1][None], b["labels"][i, t][None]))
    assert len(terms) == int((b["labels"] != -100).sum())
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_lm_head_runs_only_from_the_first_label_position_with_the_same_loss_and_gradient(llm):
    """logits_to_keep: the head skips prompt positions; loss and input gradient equal the full path."""
    b = batch(llm)
    first = int((b["labels"][:, 1:] != -100).any(dim=0).nonzero()[0])
    assert first > 0  # the batch has prompt positions the head can skip
    base = llm.embed_with_soft(b["input_ids"], b["soft_mask"], torch.randn(5, 8, llm.hidden_size))
    head_lengths: list[int] = []
    hook = llm.model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: head_lengths.append(out.shape[1])
    )
    emb = base.clone().requires_grad_(True)
    loss = llm.lm_loss(emb, b["attention_mask"], b["labels"])
    loss.backward()
    hook.remove()
    assert head_lengths == [b["labels"].shape[1] - first]
    ref_emb = base.clone().requires_grad_(True)
    logits = (
        llm.model(
            inputs_embeds=ref_emb,
            attention_mask=b["attention_mask"],
            position_ids=llm.positions(b["attention_mask"]),
        )
        .logits[:, :-1]
        .float()
    )
    ref = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(emb.grad, ref_emb.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("adapter", ["moe", "dense", "none"])
def test_padding_never_changes_the_loss(llm, adapter):
    m, moe = build(llm, adapter=adapter)
    b = batch(llm)
    base = m(b, moe=moe)["loss"]
    padded = pad_text_right(b, 3, llm.pad_id)
    padded = left_pad(padded, 4)
    out = m(padded, moe=moe)
    torch.testing.assert_close(out["loss"], base, atol=1e-5, rtol=1e-5)
    if adapter != "none":
        torch.testing.assert_close(out["attention"][:, 4:], m(b, moe=moe)["attention"], atol=1e-6, rtol=1e-5)


def test_generation_pointer_is_hard_unless_asked_for_the_trained_one(llm):
    soft_m, _ = build(llm, adapter="dense", title_pointer="soft")
    hard_m, _ = build(llm, adapter="dense", title_pointer="hard")  # same seed: same weights
    b = batch(llm, mode="generate")
    torch.testing.assert_close(soft_m.soft_prompts(b, None, "hard")[0], hard_m.soft_prompts(b)[0])
    assert not torch.allclose(soft_m.soft_prompts(b)[0], hard_m.soft_prompts(b)[0])
    g = GenerationConfig(max_new_tokens=4)
    trained = GenerationConfig(max_new_tokens=4, pointer="trained")
    assert torch.equal(soft_m.generate(b, gen=g)["tokens"], hard_m.generate(b, gen=trained)["tokens"])
    hard_p = hard_m.soft_prompts(b)[0]
    ref = hard_m.llm.generate(
        hard_m.llm.embed_with_soft(b["input_ids"], b["soft_mask"].bool(), hard_p), b["attention_mask"], g
    )
    assert torch.equal(soft_m.generate(b, gen=g)["tokens"], ref)
    with pytest.raises(ValueError, match="GenerationConfig.pointer must be 'hard' or 'trained'"):
        soft_m.generate(b, gen=GenerationConfig(pointer="soft"))


@pytest.mark.parametrize("pointer", ["soft", "hard"])
def test_title_features_read_the_llm_embeddings_and_the_pointer_adds_the_attended_titles(llm, pointer):
    m, moe = build(llm, adapter="dense", title_pointer=pointer)
    b = batch(llm)
    soft, _, attention = m.soft_prompts(b)
    if pointer == "hard":  # the top event's title alone
        attention = torch.nn.functional.one_hot(attention.argmax(1), attention.shape[1]).float()
    # by hand: positions 0..A-1 = the adapter's output; the last P positions = gain * the
    # fusion-attention-weighted LLM embeddings of each history title's first P tokens, right-aligned
    # (a title of n < P tokens: P - n zeros, then its n tokens)
    ids = b["hist_title_ids"]
    p, k = m.cfg.pointer_tokens, m.cfg.num_soft_tokens
    a = k - p
    assert soft.shape[1] == k and m.slots.shape[0] == a
    bsz, length, _ = ids.shape
    emb = torch.zeros(bsz, length, p, llm.hidden_size)
    lengths = set()
    for i in range(bsz):
        for j in range(length):
            toks = [t for t in ids[i, j].tolist() if t >= 0][:p]
            lengths.add(len(toks))
            for n, t in enumerate(toks):
                emb[i, j, p - len(toks) + n] = llm.embedding.weight[t]
    assert len(lengths - {0}) > 1  # titles of several lengths (the alignment matters)
    fused, _, _ = m._user_and_item(b)
    queries = m.query_norm(fused[:, None, :] + m.slots[None])
    adapter = m.adapter(queries.reshape(-1, queries.shape[-1])).out.view(soft.shape[0], a, -1)
    torch.testing.assert_close(soft[:, :a], m.adapter_gain[None] * adapter, atol=1e-5, rtol=1e-5)
    want = m.title_gain[None] * torch.einsum("bl,blkh->bkh", attention, emb)
    torch.testing.assert_close(soft[:, a:], want, atol=1e-5, rtol=1e-5)
    # another title for a real history event changes the prompt; the title features are off -> not
    row, col = 0, -1
    other = dict(b, hist_title_ids=b["hist_title_ids"].clone())
    other["hist_title_ids"][row, col] = torch.flip(b["hist_title_ids"][row, col], [0]).clamp(min=5)
    assert not torch.allclose(m.soft_prompts(other)[0][row], soft[row])
    torch.testing.assert_close(m.soft_prompts(other)[0][1:], soft[1:])
    plain, _ = build(llm, adapter="dense", title_features=False)
    torch.testing.assert_close(plain.soft_prompts(other)[0], plain.soft_prompts(b)[0])
    assert not any("title" in n for n, _ in plain.trainable_named_parameters())
    with pytest.raises(ValueError, match="model.title_features=true needs hist_title_ids"):
        m.soft_prompts({k: v for k, v in b.items() if k != "hist_title_ids"})
    if pointer == "hard":  # straight through: the attention still gets the pointer's gradient
        m.zero_grad()
        m.soft_prompts(b)[0].pow(2).sum().backward()
        assert m.fusion.q.weight.grad.abs().sum() > 0 and m.fusion.match.grad.abs().sum() > 0
        off, _ = build(llm, adapter="dense", title_pointer="off")
        assert not any("title_gain" in n for n, _ in off.trainable_named_parameters())


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(top_k=1, capacity_factor=1.0),
        dict(history_encoder="gru"),
        dict(history_encoder="bag"),
        dict(prompt="ids"),
        dict(adapter="dense"),
        dict(adapter="none"),
    ],
    ids=["moe", "moe-top1-cap", "gru", "bag", "ids", "dense", "none"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_outputs_and_gradients(llm, kw, dtype):
    m, moe = build(llm, **kw)
    m.train()
    if dtype == torch.bfloat16:
        m = m.to(dtype)  # what ZeRO-3 bf16 does to the engine's model (the MoE keeps its own dtype)
    b = batch(llm)
    out = m(b, moe=moe)
    keys = {"loss", "lm_loss", "aux_loss", "cited_event_loss", "expert_load", "dropped_tokens", "attention"}
    assert set(out) == keys
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert out["attention"].shape == b["hist_mask"].shape
    trainable = m.trainable_named_parameters() + (list(moe.named_parameters()) if moe else [])
    if m.cfg.adapter == "none":
        assert trainable == [] and not out["loss"].requires_grad
        return
    if m.cfg.adapter == "moe":
        assert out["expert_load"].shape == (4,) and float(out["aux_loss"]) >= 1.0 - 1e-5
        torch.testing.assert_close(out["expert_load"].sum(), torch.tensor(1.0))
    out["loss"].backward()
    assert all(p.grad is None for p in llm.parameters())
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad.float()).all()]
    # an unused field/position embedding row has zero grad but a grad tensor; none may be missing
    assert not missing, missing


def test_cited_event_loss_is_the_mean_negative_log_weight_on_the_cited_columns():
    attention = torch.tensor([[0.1, 0.2, 0.7], [0.0, 0.5, 0.5], [0.25, 0.25, 0.5]], requires_grad=True)
    loss = cited_event_loss(attention, torch.tensor([2, -1, 0]))
    torch.testing.assert_close(loss, -(torch.tensor(0.7).log() + torch.tensor(0.25).log()) / 2)
    none = cited_event_loss(attention, torch.tensor([-1, -1, -1]))
    none.backward()  # no row cites: zero, yet a backward like every other rank's
    assert float(none) == 0.0 and attention.grad is not None and not attention.grad.any()


def test_cited_event_loss_adds_to_the_loss_and_trains_the_fusion_toward_the_cited_event(llm):
    """The loss is the LM loss + aux + coef * the cited-event loss, exactly; a few steps on a batch
    whose references cite a random real event each raise the fusion weight on it from chance."""
    b = batch(llm, b=8)
    g = torch.Generator().manual_seed(1)
    real = [row.nonzero().flatten() for row in b["hist_mask"]]
    b["hist_cited"] = torch.stack([r[torch.randint(len(r), (1,), generator=g)][0] for r in real])
    b["hist_cited"][0] = -1  # a reference that cites nothing is left out
    m, moe = build(llm, cited_event_loss_coef=0.5)
    m.train()
    out = m(b, moe=moe)
    want = out["lm_loss"] + m.cfg.aux_loss_coef * out["aux_loss"] + 0.5 * out["cited_event_loss"]
    torch.testing.assert_close(out["loss"].detach(), want)
    off, _ = build(llm)
    torch.testing.assert_close(off(b, moe=moe)["lm_loss"], out["lm_loss"])  # the same model at coef 0
    assert float(off(b, moe=moe)["cited_event_loss"]) == 0.0

    def on_cited() -> float:
        with torch.no_grad():
            att = m(b, moe=moe)["attention"]
        return float(att[1:].gather(1, b["hist_cited"][1:, None]).mean())

    before = on_cited()
    params = [p for _, p in m.trainable_named_parameters()] + list(moe.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        m(b, moe=moe)["loss"].backward()
        opt.step()
    after = on_cited()
    assert before < 0.5 and after > 0.95, (before, after)
    with pytest.raises(ValueError, match="needs hist_cited in the batch"):
        m({k: v for k, v in b.items() if k != "hist_cited"}, moe=moe)


def test_ids_prompt_uses_user_column_when_present(llm):
    m, moe = build(llm, prompt="ids")
    b = batch(llm)
    without = m(b, moe=moe)["loss"]
    with_user = m(dict(b, user=torch.arange(5)), moe=moe)["loss"]
    assert not torch.allclose(without, with_user)
    # ids only: changing attributes / actions / text embedding changes nothing
    b2 = dict(b, item_attrs=torch.zeros_like(b["item_attrs"]), hist_action=torch.ones_like(b["hist_action"]))
    torch.testing.assert_close(m(b2, moe=moe)["loss"], without)


def test_trainable_state_excludes_llm_and_round_trips(llm):
    m, _ = build(llm, adapter="dense")
    sd = m.trainable_state_dict()
    assert sd and not any(k.startswith("llm.") for k in sd)
    assert sum(v.numel() for v in sd.values()) == sum(p.numel() for _, p in m.trainable_named_parameters())
    m2, _ = build(llm, adapter="dense")
    with torch.no_grad():
        for _, p in m2.trainable_named_parameters():
            p.add_(1.0)
    m2.load_trainable_state_dict(sd)
    b = batch(llm)
    torch.testing.assert_close(m2(b)["loss"], m(b)["loss"])
    with pytest.raises(ValueError, match="missing"):
        m2.load_trainable_state_dict({k: v for k, v in sd.items() if k != "slots"})


def test_moe_adapter_must_be_passed(llm):
    m, _ = build(llm)
    with pytest.raises(ValueError, match="pass the MoE adapter as `moe=`"):
        m(batch(llm))


# ------------------------------------------------------------------------------------ generation
def naive_greedy(llm: FrozenLLM, embeds, mask, steps: int) -> torch.Tensor:
    """Recompute the whole sequence each step (no KV cache): what the cached loop must equal."""
    out = []
    for _ in range(steps):
        logits = llm.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=FrozenLLM.positions(mask)
        ).logits[:, -1]
        nxt = logits.argmax(-1)
        out.append(nxt)
        embeds = torch.cat([embeds, llm.embedding(nxt)[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(out, 1)


def test_greedy_generation_is_deterministic_cached_and_bounded(llm):
    m, moe = build(llm)
    b = batch(llm, mode="generate")
    gen = GenerationConfig(max_new_tokens=6)
    llm.eos_id, saved = -1, llm.eos_id  # no early stop: compare full length with the naive loop
    try:
        t1 = m.generate(b, moe=moe, gen=gen)["tokens"]
        t2 = m.generate(b, moe=moe, gen=gen)["tokens"]
        soft, _, _ = m.soft_prompts(b, moe, "hard")  # generation points hard by default
        emb = llm.embed_with_soft(b["input_ids"], b["soft_mask"], soft)
        ref = naive_greedy(llm, emb, b["attention_mask"], 6)
    finally:
        llm.eos_id = saved
    assert t1.shape == (5, 6)
    assert torch.equal(t1, t2) and torch.equal(t1, ref)
    # extra left padding of the prompt gives the same tokens
    padded = pad_left(b, ("input_ids", "attention_mask", "soft_mask"), 3, {"input_ids": llm.pad_id})
    padded["soft_mask"] = padded["soft_mask"].bool()
    llm.eos_id = -1
    try:
        assert torch.equal(m.generate(padded, moe=moe, gen=gen)["tokens"], t1)
    finally:
        llm.eos_id = saved
    assert m.generate(b, moe=moe, gen=GenerationConfig(max_new_tokens=2))["tokens"].shape == (5, 2)


def test_eos_stops_a_row(llm):
    m, moe = build(llm, adapter="dense")
    b = batch(llm, mode="generate")
    saved = llm.eos_id
    try:
        llm.eos_id = -1
        free = m.generate(b, gen=GenerationConfig(max_new_tokens=5))["tokens"]
        llm.eos_id = int(free[0, 0])  # pretend row 0's first token is eos
        stopped = m.generate(b, gen=GenerationConfig(max_new_tokens=5))["tokens"]
    finally:
        llm.eos_id = saved
    assert stopped[0, 0] == free[0, 0] and torch.all(stopped[0, 1:] == llm.pad_id)
    for i in range(1, 5):  # other rows run until they emit that token themselves
        hit = (free[i] == int(free[0, 0])).nonzero()
        end = int(hit[0]) + 1 if len(hit) else 5
        assert torch.equal(stopped[i, :end], free[i, :end])
    # all rows finished -> the loop stops early, unless ranks must stay in step (ZeRO-3)
    llm.eos_id = int(free[0, 0])
    try:
        b1 = {k: v[:1] for k, v in b.items()}
        assert m.generate(b1, gen=GenerationConfig(max_new_tokens=5))["tokens"].shape == (1, 1)
        synced = m.generate(b1, gen=GenerationConfig(max_new_tokens=5, sync_ranks=True))["tokens"]
        assert synced.shape == (1, 5) and torch.all(synced[0, 1:] == llm.pad_id)
    finally:
        llm.eos_id = saved


def test_sampling_is_seeded_and_top_p_keeps_the_top_token(llm):
    m, moe = build(llm)
    b = batch(llm, mode="generate")
    greedy = m.generate(b, moe=moe, gen=GenerationConfig(max_new_tokens=4))["tokens"]
    s = GenerationConfig(max_new_tokens=4, do_sample=True, temperature=1.5)
    a1 = m.generate(b, moe=moe, gen=s, generator=torch.Generator().manual_seed(3))["tokens"]
    a2 = m.generate(b, moe=moe, gen=s, generator=torch.Generator().manual_seed(3))["tokens"]
    assert torch.equal(a1, a2) and not torch.equal(a1, greedy)
    tiny_p = GenerationConfig(max_new_tokens=4, do_sample=True, top_p=1e-6)
    assert torch.equal(
        m.generate(b, moe=moe, gen=tiny_p, generator=torch.Generator().manual_seed(0))["tokens"], greedy
    )


def test_top_p_keeps_the_greedy_token_when_logits_tie():
    """A tie for the top logit (the tiny LLM hit one): top-p must keep the token argmax picks (the
    first), not whichever an unstable sort of the probabilities puts first."""
    from seller_dist.model.llm import FrozenLLM

    tiny_p = GenerationConfig(do_sample=True, top_p=1e-6)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(1, 512, generator=g)
        i, j = sorted(torch.randperm(512, generator=g)[:2].tolist())
        logits[0, i] = logits[0, j] = logits.max() + 1
        assert int(FrozenLLM._pick(logits, tiny_p, g)) == int(logits.argmax()) == i


# ------------------------------------------------------------------------------------ loading
def test_llm_path_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model.llm_path={tmp_path}: no config.json there"):
        resolve_llm_path(str(tmp_path), str(tmp_path / "cache"))


@pytest.mark.slow
def test_llm_from_object_store_is_downloaded_once(tiny_llm_dir, s3_bucket, tmp_path):
    from seller_dist import storage

    url = f"{s3_bucket}/models/tiny"
    for name in os.listdir(tiny_llm_dir):
        with open(os.path.join(tiny_llm_dir, name), "rb") as f:
            storage.write_bytes(f"{url}/{name}", f.read())
    local = resolve_llm_path(url, str(tmp_path / "cache"))
    assert sorted(n for n in os.listdir(local) if n != ".complete.json") == sorted(os.listdir(tiny_llm_dir))
    assert resolve_llm_path(url, str(tmp_path / "cache")) == local  # cached
    a = FrozenLLM.from_pretrained(url, cache_dir=str(tmp_path / "cache"))
    b = FrozenLLM.from_pretrained(tiny_llm_dir)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_bootstrap_llm_from_a_prepared_dataset(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seller_dist.model import bootstrap
    from tests.conftest import make_dataset

    make_dataset(str(tmp_path / "data"), n_records=60, n_shards=2)
    cfg = bootstrap.BootstrapConfig(
        str(tmp_path / "data"), str(tmp_path / "llm"), vocab_size=300, hidden=32, layers=1, heads=2
    )
    assert bootstrap.bootstrap_llm(dataclasses.replace(cfg, steps=30, batch_size=8)) == str(tmp_path / "llm")
    tok = AutoTokenizer.from_pretrained(tmp_path / "llm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    for t in ("<|pad|>", "<|bos|>", "<|eos|>", "<|soft|>"):
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id
    assert (
        tok.decode(tok("because you liked item 7", add_special_tokens=False)["input_ids"])
        == "because you liked item 7"
    )
    # training called the tokenizer with padding and truncation: the saved one must not keep them
    saved = json.loads((tmp_path / "llm" / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tok)
    # trained on the dataset's explanations: they are likelier than shuffled words
    text = "because you liked item 3 lamp you may like item 4 novel"
    words = text.split()
    shuffled = " ".join(words[::-1])

    def nll(s: str) -> float:
        ids = tok(f"<|bos|>{s}", return_tensors="pt")["input_ids"]
        return float(model(input_ids=ids, labels=ids).loss.detach())

    assert nll(text) < nll(shuffled)


def test_bpe_merges_most_frequent_pair_first_and_breaks_ties_by_text():
    from seller_dist.model.bootstrap import SPECIAL_TOKENS, train_bpe

    # "ab" x3 and "cd" x3 tie at 3: "ab" comes first by text; then "abab"... as counts allow
    vocab, merges = train_bpe({"abab": 1, "ab": 1, "cd": 3}, 100, ["a", "b", "c", "d"])
    assert merges[:2] == [("a", "b"), ("c", "d")]
    assert merges[2] == ("ab", "ab")
    assert list(vocab)[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    assert [vocab[t] for t in ("a", "b", "c", "d")] == [4, 5, 6, 7]
    vocab6, merges6 = train_bpe({"abab": 1, "ab": 1, "cd": 3}, 9, ["a", "b", "c", "d"])
    assert len(vocab6) == 9 and merges6 == [("a", "b")]  # stops at the vocabulary size


def test_copy_text_names_the_swapped_title_in_the_profile_and_the_explanation():
    import random

    from seller_dist.model.bootstrap import copy_text

    history = ["Alpha Lamp 1", "Beta Kettle 22", "Alpha Lamp 12"]
    expl = "Recommended because you viewed Alpha Lamp 12 this week: Gamma Lamp 3 is another lamp."
    picks = set()
    for seed in range(30):
        text = copy_text(history, "Gamma Lamp 3", expl, random.Random(seed))
        head, tail = text.split(" Explanation: ")
        profile = head.split("Profile: ")[1]
        assert head.startswith(
            "User history: Alpha Lamp 1; Beta Kettle 22; Alpha Lamp 12. Recommended: Gamma"
        )
        assert profile in history  # a random title of the same history...
        assert tail == expl.replace("Alpha Lamp 12", profile)  # ...cited in place of the real one
        picks.add(profile)
    assert picks == set(history)  # the longest match was replaced, not its prefix "Alpha Lamp 1"
    # an explanation that names no history title gets no profile
    assert copy_text(history, "G", "A new direction.", random.Random(0)).endswith(
        "Profile: Explanation: A new direction."
    )


def test_copy_text_with_attributes_swaps_only_titles_related_to_the_target_as_the_cited_one():
    import random

    from seller_dist.model.bootstrap import copy_text

    history = ["Alpha Lamp 1", "Beta Kettle 22", "Alpha Lamp 12", "Gamma Rake 5"]
    attrs = [
        {"brand": "Alpha", "category": "lamps"},
        {"brand": "Beta", "category": "kitchen"},
        {"brand": "Alpha", "category": "lamps"},
        {"brand": "Gamma", "category": "garden"},
    ]
    target = {"brand": "Delta", "category": "lamps", "price": "mid"}  # "mid" is never named
    expl = "Recommended because you viewed Alpha Lamp 12: Delta Lamp 3 is another lamps item, from Delta."

    def profiles(explanation: str) -> set[str]:
        out = set()
        for seed in range(40):
            text = copy_text(history, "Delta Lamp 3", explanation, random.Random(seed), attrs, target)
            head, tail = text.split(" Explanation: ")
            out.add(head.split("Profile:")[1].strip())
        return out

    # same category, other brand, as the cited title: the explanation stays true
    assert profiles(expl) == {"Alpha Lamp 1", "Alpha Lamp 12"}
    # cites no history event: a title sharing neither named value, so an unrelated profile goes uncited
    unrelated = "Delta Lamp 3 is a new direction for you: a lamps pick from Delta."
    assert profiles(unrelated) == {"Beta Kettle 22", "Gamma Rake 5"}
    text = copy_text(history, "Delta Lamp 3", unrelated, random.Random(0), attrs, target)
    assert text.endswith(f"Explanation: {unrelated}")
    # every history item shares a named value: no profile, as without attributes
    near = [{"brand": "Delta", "category": "garden"}] * 4
    assert copy_text(history, "Delta Lamp 3", unrelated, random.Random(0), near, target).endswith(
        f"Profile: Explanation: {unrelated}"
    )


def test_bootstrap_learns_a_copy_texts_explanation_not_its_prompt(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from seller_dist.model.bootstrap import lm_batch

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    copy = "User history: a lamp; a kettle. Recommended: a drum. Profile: a lamp Explanation: a lamp fits."
    plain = "because you liked the lamp <|eos|> <|soft|>"  # data text: special-token text stays text
    enc = lm_batch(tok, [copy, plain], max_len=200)
    for row, text in enumerate((copy, plain)):  # bos + the text as plain text + eos, right padded
        n = int(enc["attention_mask"][row].sum())
        plain_ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert enc["input_ids"][row, 1 : n - 1].tolist() == plain_ids
        assert enc["input_ids"][row, [0, n - 1]].tolist() == [tok.bos_token_id, tok.eos_token_id]
    labels = enc["labels"]
    learned = tok.decode(labels[0][labels[0] >= 0])
    assert learned.replace(tok.eos_token, "").strip() == "a lamp fits."
    n_plain = int(enc["attention_mask"][1].sum())
    assert torch.equal(labels[1, :n_plain], enc["input_ids"][1, :n_plain])  # every token of a plain text
    assert torch.all(labels[1, n_plain:] == -100)
    assert (enc["input_ids"][1, 1 : n_plain - 1] != tok.eos_token_id).all()


def test_bootstrap_tokenizer_is_the_same_in_every_process(tmp_path):
    """The tokenizer (hence the bootstrapped LLM) must not depend on hash order: two processes
    with different PYTHONHASHSEED train byte-identical tokenizers; text round-trips."""
    import subprocess
    import sys

    code = (
        "import sys; from seller_dist.model.bootstrap import train_tokenizer, TINY_CORPUS; "
        "texts = TINY_CORPUS * 3 + ['caf\u00e9 \u00fcber na\u00efve \U0001f600', 'item 12 item 21 item 12']; "
        "tok = train_tokenizer(texts, 330); open(sys.argv[1], 'w').write(tok.backend_tokenizer.to_str())"
    )
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"tok{seed}.json"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=120)
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    from seller_dist.model.bootstrap import TINY_CORPUS, train_tokenizer

    tok = train_tokenizer(TINY_CORPUS, 330)
    for text in ("because you liked item 7 rake", "café über naïve 😀", ""):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_bootstrap_llm_fails_clearly_without_a_dataset(tmp_path):
    from seller_dist.model import bootstrap

    with pytest.raises(FileNotFoundError, match="no manifest at"):
        bootstrap.bootstrap_llm(bootstrap.BootstrapConfig(str(tmp_path / "nothing"), str(tmp_path / "o")))
