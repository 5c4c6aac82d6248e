"""Item text embeddings (all-MiniLM-L6-v2, offline) written into the item catalog shards."""

from __future__ import annotations

import numpy as np
import pytest

import data_prep.pipeline as pipeline
from seller_dist.config import PrepConfig, from_dict
from seller_dist.data import shards
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.sentence_embeddings import npy_bytes, npy_load


def test_npy_round_trip_is_float32_without_pickle():
    v = np.arange(5, dtype=np.float64)
    back = npy_load(npy_bytes(v))
    assert back.dtype == np.float32 and np.array_equal(back, v.astype(np.float32))


@pytest.mark.slow  # loads torch + sentence-transformers (~10 s)
def test_prep_embeds_item_text(tmp_path):
    cfg = from_dict(
        PrepConfig,
        {
            "output": str(tmp_path / "ds"),
            "embed_item_text": True,
            "embed_batch_size": 16,
            "source_options": {"num_users": 5, "num_items": 24, "num_categories": 3},
        },
    )
    manifest = pipeline.run_prep(cfg)
    assert manifest["items"]["embedding_dim"] == 384
    cat = ItemCatalog.load(str(tmp_path / "ds"))
    emb = cat.embeddings[1:]
    assert emb.shape == (24, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # the text encoder sees the text: items of the same category are closer than items of others
    cats = [a["category"] for a in cat.attributes[1:]]
    sims = emb @ emb.T
    same = [sims[i, j] for i in range(24) for j in range(24) if i != j and cats[i] == cats[j]]
    other = [sims[i, j] for i in range(24) for j in range(24) if cats[i] != cats[j]]
    assert np.mean(same) > np.mean(other) + 0.1
    info = manifest["items"]["shards"][0]
    sample = shards.iter_tar_samples(shards.read_shard_bytes(str(tmp_path / "ds"), info), info["path"])[0]
    assert sample["__key__"] == "i000000001" and npy_load(sample["emb.npy"]).shape == (384,)


def test_special_token_text_is_read_as_text_by_the_sentence_encoder():
    """ "[SEP]" in a review is text: only the encoder's own [CLS] ... [SEP] frame is special."""
    from seller_dist.data.sentence_embeddings import load_encoder

    tok = load_encoder().tokenizer
    ids = tok("great [SEP] shoes [CLS] [MASK]")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert not set(ids[1:-1]) & set(tok.all_special_ids)
