"""Shared pieces of the eval-job tests: a committed checkpoint of a real SellerModel for a prepared
dataset, written exactly as a `world = ep_size` training job writes it (dense part from rank 0,
each expert-parallel rank its own experts), without spending test time on training."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

from seller_dist.config import ModelConfig
from seller_dist.data.shards import Manifest
from seller_dist.model.expert_parallel import ExpertParallelGroups
from seller_dist.model.llm import FrozenLLM
from seller_dist.model.moe import MoEAdapter
from seller_dist.model.seller import SellerModel
from seller_dist.model.vocab import ModelVocab
from seller_dist.train import checkpoint as ck
from tests.model_helpers import tiny_model_config


def small_model_cfg(llm_path: str, **kw: Any) -> ModelConfig:
    return tiny_model_config(llm_path, **kw)


def write_checkpoint_for(
    data_root: str,
    llm_path: str,
    ckpt_root: str,
    step: int = 5,
    ep_size: int = 2,
    seed: int = 0,
    **model_kw: Any,
) -> str:
    """A committed checkpoint (random but fixed trainable weights) whose vocab matches the dataset."""
    manifest = Manifest.load(data_root)
    vocab = ModelVocab.from_manifest(manifest.data)
    cfg = small_model_cfg(llm_path, **model_kw)
    torch.manual_seed(seed)
    model = SellerModel(cfg, vocab, FrozenLLM.from_pretrained(llm_path))
    full = model.make_moe().state_dict() if cfg.adapter == "moe" else {}
    for rank in range(ep_size):
        w = ck.CheckpointWriter(ckpt_root, step, rank, ep_size)
        if rank == 0:
            w.save_tensors(ck.DENSE_FILE, model.trainable_state_dict())
            w.save_json(ck.MODEL_META_FILE, ck.model_meta(dataclasses.replace(cfg, ep_size=ep_size), vocab))
            w.save_json(ck.TRAIN_STATE_FILE, {"step": step})
            raw = (Path(data_root) / "manifest.json").read_bytes()
            w.save_text(ck.MANIFEST_HASH_FILE, hashlib.sha256(raw).hexdigest() + "\n")
        if cfg.adapter == "moe":
            groups = ExpertParallelGroups(ep_size=ep_size, ep_rank=rank, world_size=ep_size, rank=rank)
            c = cfg
            local = MoEAdapter(
                c.d_model, c.expert_hidden, model.llm.hidden_size, c.num_experts, c.top_k, 0.0, groups
            )
            local.load_full_state_dict(full)
            w.save_tensors(ck.moe_file(rank), local.state_dict())
        w.upload()
    url = f"{ckpt_root}/{ck.step_dirname(step)}"
    ck.commit(url, ep_size)
    return url
