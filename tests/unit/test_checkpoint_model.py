"""Checkpoints of a real SellerModel: size independent of the frozen LLM; export reloads without
Ray or DeepSpeed and reproduces the trained model's loss and generation exactly."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seller_dist.cli import main
from seller_dist.config import ModelConfig
from seller_dist.model.expert_parallel import ExpertParallelGroups
from seller_dist.model.llm import FrozenLLM, GenerationConfig
from seller_dist.model.moe import MoEAdapter
from seller_dist.model.seller import SellerModel
from seller_dist.model.synthetic import synthetic_batch
from seller_dist.model.vocab import ModelVocab
from seller_dist.train import checkpoint as ck
from seller_dist.train import export as ex
from tests.model_helpers import tiny_model_config
from tests.tiny_llm import build_tiny_llm, token_ids_of

VOCAB = ModelVocab(num_items=30, attribute_sizes=[5, 4], text_dim=8, num_users=10)
REPO = Path(__file__).resolve().parents[2]


def model_cfg(llm_path: str, ep_size: int = 1) -> ModelConfig:
    return tiny_model_config(llm_path, ep_size=ep_size)


def trained(llm: FrozenLLM, llm_path: str, steps: int = 2):
    """A SellerModel + MoE + both optimizers after a few real steps (so nothing is at its init)."""
    torch.manual_seed(0)
    model = SellerModel(model_cfg(llm_path), VOCAB, llm)
    moe = model.make_moe()
    dense_opt = torch.optim.AdamW([p for _, p in model.trainable_named_parameters()], lr=1e-2)
    moe_opt = torch.optim.AdamW(moe.parameters(), lr=1e-2)
    model.train()
    for s in range(steps):
        out = model(synthetic_batch(VOCAB, token_ids_of(llm), 8, 6, 5, seed=s), moe=moe)
        out["loss"].backward()
        for opt in (dense_opt, moe_opt):
            opt.step()
            opt.zero_grad()
    model.eval()
    moe.eval()
    return model, moe, dense_opt, moe_opt


def write_trained_checkpoint(root: str, step: int, model, moe, dense_opt, moe_opt, ep_size: int) -> str:
    """Write the checkpoint the way a `world = ep_size` job does: rank 0 the dense part, every
    expert-parallel rank its own experts (sliced exactly as MoEAdapter slices them)."""
    c = model.cfg
    full = moe.state_dict()
    for rank in range(ep_size):
        w = ck.CheckpointWriter(root, step, rank, ep_size)
        if rank == 0:
            w.save_tensors(ck.DENSE_FILE, model.trainable_state_dict())
            w.save_state("optim-dense-rank-0", dense_opt.state_dict())
            w.save_json(ck.MODEL_META_FILE, ck.model_meta(dataclasses.replace(c, ep_size=ep_size), VOCAB))
            w.save_json(ck.TRAIN_STATE_FILE, {"step": step})
        groups = ExpertParallelGroups(ep_size=ep_size, ep_rank=rank, world_size=ep_size, rank=rank)
        local = MoEAdapter(
            c.d_model, c.expert_hidden, model.llm.hidden_size, c.num_experts, c.top_k, 0.0, groups
        )
        local.load_full_state_dict(full)
        w.save_tensors(ck.moe_file(rank), local.state_dict())
        if ep_size == 1:
            w.save_state("optim-moe-rank-0", moe_opt.state_dict())
        w.upload()
    url = f"{root}/{ck.step_dirname(step)}"
    ck.commit(url, ep_size)
    return url


def folder_bytes(url: str) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in Path(url).rglob("*") if p.is_file()}


def test_checkpoint_size_does_not_depend_on_frozen_llm(tmp_path):
    sizes, llm_params = [], []
    for name, layers in (("llm_a", 1), ("llm_b", 6)):  # same hidden size, 6x the transformer blocks
        path = build_tiny_llm(tmp_path / name, hidden=64, layers=layers, init_std=0.15)
        llm = FrozenLLM.from_pretrained(path)
        llm_params.append(sum(p.numel() for p in llm.parameters()))
        model, moe, dense_opt, moe_opt = trained(llm, path, steps=1)
        url = write_trained_checkpoint(str(tmp_path / f"ckpt_{name}"), 1, model, moe, dense_opt, moe_opt, 1)
        c = ck.Checkpoint.open(url)
        assert not [k for k in c.load_tensors(ck.DENSE_FILE) if k.startswith("llm.")]
        sizes.append(folder_bytes(url))
    assert llm_params[1] > 2 * llm_params[0]
    assert sizes[0] == sizes[1]  # file by file, byte count by byte count
    # fp32 weights + AdamW's two moments of the trainable parameters, plus headers and JSON: no LLM
    n_trainable = sum(p.numel() for _, p in model.trainable_named_parameters()) + sum(
        p.numel() for p in moe.parameters()
    )
    assert 12 * n_trainable < sum(sizes[0].values()) < 12 * n_trainable + 64 * 1024


LOAD_WITHOUT_RAY_OR_DEEPSPEED = textwrap.dedent(
    """
    import sys, json, torch
    sys.modules["ray"] = None          # any import of ray or deepspeed now raises ImportError
    sys.modules["deepspeed"] = None
    from safetensors.torch import load_file, save_file
    from seller_dist.model.llm import GenerationConfig
    from seller_dist.train.export import load_exported
    out_dir, batch_file, result_file = sys.argv[1:4]
    m = load_exported(out_dir)
    batches = load_file(batch_file)
    gen = {k[4:]: v for k, v in batches.items() if k.startswith("gen.")}
    train = {k[6:]: v for k, v in batches.items() if k.startswith("train.")}
    gen["soft_mask"], train["soft_mask"] = gen["soft_mask"].bool(), train["soft_mask"].bool()
    gen["hist_mask"], train["hist_mask"] = gen["hist_mask"].bool(), train["hist_mask"].bool()
    tokens = m.generate(gen, GenerationConfig(max_new_tokens=8))["tokens"]
    with torch.no_grad():
        loss = m.model(train, moe=m.moe)["loss"]
    save_file({"tokens": tokens.contiguous(), "loss": loss.reshape(1)}, result_file)
    """
)


def test_export_reloads_into_plain_pytorch_and_generates_the_same(tmp_path, tiny_llm_dir):
    llm = FrozenLLM.from_pretrained(tiny_llm_dir)
    ids = token_ids_of(llm)
    model, moe, dense_opt, moe_opt = trained(llm, tiny_llm_dir, steps=2)
    # the checkpoint holds the experts split over 2 expert-parallel ranks; export gathers them
    url = write_trained_checkpoint(str(tmp_path / "ckpts"), 7, model, moe, dense_opt, moe_opt, ep_size=2)
    assert ck.Checkpoint.open(url).load_tensors(ck.moe_file(1))["w1"].shape[0] == 2
    # a newer step cut off before its marker: never exported
    cut_off = write_trained_checkpoint(str(tmp_path / "ckpts"), 9, model, moe, dense_opt, moe_opt, 1)
    Path(cut_off, ck.COMMIT_MARKER).unlink()
    # the CLI, given the run's checkpoints folder, exports the newest committed checkpoint
    assert main(["export", str(tmp_path / "ckpts"), "--out", str(tmp_path / "export")]) == 0
    out = tmp_path / "export"

    weights = load_file(str(out / ex.WEIGHTS_FILE))
    expected = {**model.trainable_state_dict(), **{f"moe.{k}": v for k, v in moe.state_dict().items()}}
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    config = json.loads((out / ex.CONFIG_FILE).read_text())
    assert config["model"]["ep_size"] == 1 and config["llm_path"] == tiny_llm_dir and config["step"] == 7
    assert config["vocab"] == dataclasses.asdict(VOCAB)

    gen_batch = synthetic_batch(VOCAB, ids, 8, 5, 6, seed=11, mode="generate")
    train_batch = synthetic_batch(VOCAB, ids, 8, 5, 6, seed=12)
    with torch.no_grad():
        ref_tokens = model.generate(gen_batch, moe=moe, gen=GenerationConfig(max_new_tokens=8))["tokens"]
        ref_loss = model(train_batch, moe=moe)["loss"]
        torch.manual_seed(123)
        fresh = SellerModel(model_cfg(tiny_llm_dir), VOCAB, llm).eval()
        fresh_loss = fresh(train_batch, moe=fresh.make_moe())["loss"]
    assert not torch.equal(fresh_loss, ref_loss)  # the comparison below can tell weights apart

    from safetensors.torch import save_file

    flat = {f"gen.{k}": v.to(torch.uint8) if v.dtype == torch.bool else v for k, v in gen_batch.items()}
    flat.update(
        {f"train.{k}": v.to(torch.uint8) if v.dtype == torch.bool else v for k, v in train_batch.items()}
    )
    save_file({k: v.contiguous() for k, v in flat.items()}, str(tmp_path / "batches.safetensors"))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_WITHOUT_RAY_OR_DEEPSPEED,
            str(out),
            str(tmp_path / "batches.safetensors"),
            str(tmp_path / "result.safetensors"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = load_file(str(tmp_path / "result.safetensors"))
    assert torch.equal(result["tokens"], ref_tokens)
    assert torch.equal(result["loss"][0], ref_loss)


def test_export_names_a_missing_expert_file(tmp_path, tiny_llm_dir):
    llm = FrozenLLM.from_pretrained(tiny_llm_dir)
    model, moe, dense_opt, moe_opt = trained(llm, tiny_llm_dir, steps=0)
    root = str(tmp_path / "c")
    w = ck.CheckpointWriter(root, 3)
    w.save_tensors(ck.DENSE_FILE, model.trainable_state_dict())
    w.save_json(ck.MODEL_META_FILE, ck.model_meta(dataclasses.replace(model.cfg, ep_size=2), VOCAB))
    w.save_tensors(ck.moe_file(0), moe.state_dict())
    w.upload()
    ck.commit(f"{root}/step-00000003", 1)
    with pytest.raises(ck.CheckpointError, match=r"model.ep_size=2 but lacks \['moe-rank-1.safetensors'\]"):
        ex.export(f"{root}/step-00000003", tmp_path / "out")
