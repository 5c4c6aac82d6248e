"""The model consumes the real collate's batches (seller_dist.data.collate) of a prepared dataset."""

from __future__ import annotations

import torch

from seller_dist.config import ModelConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.collate import SellerCollator
from seller_dist.data.shards import Manifest
from seller_dist.model.llm import FrozenLLM, GenerationConfig
from seller_dist.model.seller import SellerModel
from seller_dist.model.vocab import ModelVocab
from tests.conftest import make_dataset, make_records


def test_model_trains_and_generates_on_collated_records(tmp_path, tiny_llm_dir):
    root = str(tmp_path / "data")
    make_dataset(root, n_records=12, n_shards=1, embedding_dim=8)
    manifest = Manifest.load(root)
    vocab = ModelVocab.from_manifest(manifest.data)
    catalog = ItemCatalog.load(root, manifest)
    assert vocab.num_items == catalog.num_items and vocab.text_dim == catalog.embedding_dim
    assert vocab.attribute_sizes == [len(catalog.attribute_vocab[f]) for f in catalog.attribute_fields]
    llm = FrozenLLM.from_pretrained(tiny_llm_dir)
    cfg = ModelConfig(d_model=32, num_heads=4, num_layers=1, expert_hidden=32, num_experts=4, dropout=0.0)
    torch.manual_seed(0)
    model = SellerModel(cfg, vocab, llm)
    moe = model.make_moe()
    records = make_records(6, "train", num_items=50, max_history=5)
    kw = dict(num_soft_tokens=cfg.num_soft_tokens, max_prompt_tokens=96, max_target_tokens=16)
    train = SellerCollator(tiny_llm_dir, catalog, max_history=5, mode="train", **kw)(records)
    out = model(train, moe=moe)
    assert torch.isfinite(out["loss"]) and out["attention"].shape == train["hist_mask"].shape
    out["loss"].backward()
    assert moe.w1.grad is not None and model.slots.grad is not None
    model.eval()
    gen = SellerCollator(tiny_llm_dir, catalog, max_history=5, mode="generate", **kw)(records)
    tokens = model.generate(gen, moe=moe, gen=GenerationConfig(max_new_tokens=5))["tokens"]
    assert tokens.shape[0] == 6 and 1 <= tokens.shape[1] <= 5
