"""Warm start (`init_from`) without Ray or DeepSpeed: train window 1 in one process, write its
checkpoint in the worker's format, then start window 2's model from it with the same functions the
worker calls (seller_dist.train.warm_start) and compare with a cold start of the same seed.

Window 2 is prepared twice: with vocab_from=window 1 (lineage: rows copy by index) and without
(fresh indices: rows are mapped by item id)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seller_dist import cli
from seller_dist.config import ConfigError, dump_yaml
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.shards import Manifest
from seller_dist.model.llm import FrozenLLM
from seller_dist.model.seller import SellerModel
from seller_dist.model.vocab import ModelVocab
from seller_dist.train import checkpoint as ck
from seller_dist.train import driver, warm_start
from seller_dist.train import export as ex
from seller_dist.train.preflight import preflight
from seller_dist.train.step import lr_at, model_inputs, rank_data, rank_loader, step_seed
from tests.train_helpers import TRAIN_DEMO, small_overrides, train_config
from tests.warm_start_helpers import prep_window, write_windows

W1_STEPS = 40


def sha_of(root: str) -> str:
    return hashlib.sha256(Path(root, "manifest.json").read_bytes()).hexdigest()


def overrides(data: str, llm: str, runs: str, *extra: str) -> list[str]:
    return small_overrides(data, llm, runs) + [
        "model.dropout=0.0",
        "data.batch_size=8",
        "model.ep_size=1",
        *extra,
    ]


def train_plain(cfg, llm: FrozenLLM, steps: int):
    """The worker's step in one process with torch AdamW (no DeepSpeed): window 1's model."""
    manifest, catalog, loader = rank_data(cfg, 0, 1)
    torch.manual_seed(cfg.seed)
    model = SellerModel(cfg.model, ModelVocab.from_manifest(manifest.data), llm)
    moe = model.make_moe()
    params = [p for _, p in model.trainable_named_parameters()] + list(moe.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr)
    batches = iter(loader)
    model.train()
    moe.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.optim, steps)
        torch.manual_seed(step_seed(cfg.seed, step, 0, 0))
        out = model(model_inputs(next(batches), torch.device("cpu")), moe=moe)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return manifest, catalog, model.eval(), moe.eval()


def write_worker_checkpoint(cfg, step: int, manifest, catalog, model, moe) -> str:
    """What rank 0 of a one-worker job writes (the Trainer's save), minus the
    DeepSpeed engine folder, which a warm start does not read."""
    sha = sha_of(cfg.data.manifest)
    w = ck.CheckpointWriter(ck.checkpoints_root(cfg.storage_path, cfg.run_name), step, 0, 1)
    w.save_tensors(ck.DENSE_FILE, model.trainable_state_dict())
    w.save_tensors(ck.moe_file(0), moe.state_dict())
    w.save_json(ck.TRAIN_STATE_FILE, {"step": step, "manifest_sha256": sha, "seed": cfg.seed})
    w.save_text(ck.CONFIG_FILE, dump_yaml(cfg))
    w.save_json(ck.MODEL_META_FILE, ck.model_meta(cfg.model, model.vocab))
    w.save_text(ck.MANIFEST_HASH_FILE, sha + "\n")
    item_ids = catalog.item_ids[1:]
    w.save_json(ck.DATASET_FILE, ck.dataset_record(cfg.data.manifest, sha, manifest.data, item_ids))
    w.upload()
    ck.commit(w.url, 1)
    return w.url


@pytest.fixture(scope="module")
def llm(tiny_llm_dir) -> FrozenLLM:
    return FrozenLLM.from_pretrained(tiny_llm_dir)


@pytest.fixture(scope="module")
def windows(tmp_path_factory, tiny_llm_dir, llm) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("warm")
    raw1, raw2 = write_windows(tmp)
    d1, d2, d2_fresh = str(tmp / "d1"), str(tmp / "d2"), str(tmp / "d2_fresh")
    prep_window(raw1, Path(d1))
    prep_window(raw2, Path(d2), vocab_from=d1)
    prep_window(raw2, Path(d2_fresh))
    runs = str(tmp / "runs")
    cfg1 = train_config(overrides(d1, tiny_llm_dir, runs, "run_name=w1", "optim.warmup_steps=4"))
    manifest, catalog, model, moe = train_plain(cfg1, llm, W1_STEPS)
    url = write_worker_checkpoint(cfg1, W1_STEPS, manifest, catalog, model, moe)
    return SimpleNamespace(
        d1=d1, d2=d2, d2_fresh=d2_fresh, runs=runs, ckpt=url, llm_dir=tiny_llm_dir, tmp=tmp
    )


def new_models(cfg, llm: FrozenLLM, ws: warm_start.WarmStart | None):
    """Window 2's model and MoE the way the worker builds them: seeded, then (warm) the copy."""
    torch.manual_seed(cfg.seed)
    model = SellerModel(cfg.model, ModelVocab.from_manifest(Manifest.load(cfg.data.manifest).data), llm)
    if ws is not None:
        warm_start.load_dense(model, ws)
    moe = model.make_moe()
    if ws is not None:
        warm_start.load_moe(moe, ws)
    return model.eval(), moe.eval()


def cfg2(w: SimpleNamespace, data: str, *extra: str):
    return train_config(overrides(data, w.llm_dir, w.runs, "run_name=w2", f"init_from={w.ckpt}", *extra))


@pytest.mark.parametrize("which", ["lineage", "fresh"])
def test_old_item_rows_carried_new_rows_fresh(windows, llm, which):
    data = windows.d2 if which == "lineage" else windows.d2_fresh
    cfg = cfg2(windows, data)
    ws = warm_start.check_init_from(cfg, sha_of(data))
    assert ws.item_rows == ("index" if which == "lineage" else "item_id")
    warm, warm_moe = new_models(cfg, llm, ws)
    cold, cold_moe = new_models(cfg, llm, None)
    saved = ck.Checkpoint.open(windows.ckpt).load_tensors(ck.DENSE_FILE)
    old_ids = ItemCatalog.load(windows.d1).item_ids
    new_ids = ItemCatalog.load(data).item_ids
    old_idx = {iid: i for i, iid in enumerate(old_ids) if iid}
    old_rows = saved["item_embedding.weight"]
    w_rows, c_rows = warm.item_embedding.weight.detach(), cold.item_embedding.weight.detach()
    carried = new = 0
    for idx in range(1, len(new_ids)):
        iid = new_ids[idx]
        if iid in old_idx:
            assert torch.equal(w_rows[idx], old_rows[old_idx[iid]]), iid
            carried += 1
        else:  # a new item: the cold start's init, equal to no row of the old table
            assert torch.equal(w_rows[idx], c_rows[idx]), iid
            assert not (old_rows == w_rows[idx]).all(dim=1).any(), iid
            new += 1
    assert new == 11  # i040-i049 and a-new
    assert carried == (40 if which == "lineage" else 30)  # the lineage keeps i000-i009
    assert (ws.items_carried, ws.items_new) == (carried, new)
    if which == "lineage":
        assert new_ids[1:41] == old_ids[1:41] and new_ids[41] == "a-new"  # appended after the old ones

    # attribute values move by value: "aquarium" is new and sorts first, "books" moves from row 1 to 2
    cats_old = ItemCatalog.load(windows.d1).attribute_vocab["category"]
    cats_new = ItemCatalog.load(data).attribute_vocab["category"]
    f = ItemCatalog.load(data).attribute_fields.index("category")
    for prefix in ("item_encoder", "history.embed"):
        key = f"{prefix}.fields.{f}.weight"
        got = dict(warm.named_parameters())[key].detach()
        fresh = dict(cold.named_parameters())[key].detach()
        for r, value in enumerate(cats_new, start=1):
            if value in cats_old:
                assert torch.equal(got[r], saved[key][cats_old.index(value) + 1]), (key, value)
            else:
                assert torch.equal(got[r], fresh[r]), (key, value)
    # everything else is the checkpoint's, unchanged
    indexed = warm.indexed_parameters()
    for name, p in warm.trainable_named_parameters():
        if name not in indexed:
            assert torch.equal(p.detach(), saved[name]), name
    saved_moe = ck.Checkpoint.open(windows.ckpt).load_tensors(ck.moe_file(0))
    for k, v in warm_moe.state_dict().items():
        assert torch.equal(v, saved_moe[k]), k


def test_step0_loss_below_cold_start(windows, llm):
    cfg = cfg2(windows, windows.d2, "data.batch_size=16")
    ws = warm_start.check_init_from(cfg, sha_of(windows.d2))
    _, loader = rank_loader(cfg, 0, 1)
    batch = model_inputs(next(iter(loader)), torch.device("cpu"))
    losses = {}
    for name, plan in (("warm", ws), ("cold", None)):
        model, moe = new_models(cfg, llm, plan)
        with torch.no_grad():
            torch.manual_seed(0)
            losses[name] = float(model(batch, moe=moe)["loss"])
    assert math.isfinite(losses["warm"]) and losses["warm"] < losses["cold"] - 0.05, losses


@pytest.fixture
def no_ray(monkeypatch):
    def forbidden(cfg):
        raise AssertionError("Ray was started although preflight should have refused the config")

    monkeypatch.setattr(driver, "init_ray", forbidden)


@pytest.mark.parametrize(
    ("change", "key", "diff"),
    [
        ("model.d_model=48", "slots", "model.d_model=32 in the checkpoint, 48 here"),
        ("model.expert_hidden=48", "moe.w1", "model.expert_hidden=32 in the checkpoint, 48 here"),
    ],
)
def test_mismatched_model_fails_in_preflight_naming_the_key(windows, no_ray, capsys, change, key, diff):
    sets = overrides(
        windows.d2, windows.llm_dir, windows.runs, "run_name=w2-bad", f"init_from={windows.ckpt}"
    )
    args = [a for s in [*sets, change] for a in ("--set", s)]
    code = cli.main(["train", "--config", str(TRAIN_DEMO), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"init_from: {windows.ckpt}: {key} has shape" in err, err
    assert diff in err, err
    assert not Path(windows.runs, "w2-bad", "checkpoints").exists()


def test_export_folder_warm_starts_like_its_checkpoint(windows, tmp_path):
    out = ex.export(windows.ckpt, tmp_path / "export")
    assert (out / ex.DATASET_FILE).is_file()
    a = warm_start.check_init_from(cfg2(windows, windows.d2_fresh), sha_of(windows.d2_fresh))
    b_cfg = cfg2(windows, windows.d2_fresh, f"init_from={out}")
    b = warm_start.check_init_from(b_cfg, sha_of(windows.d2_fresh))
    assert (a.kind, b.kind) == ("checkpoint", "export")
    assert (
        a.record()["sha256"] == hashlib.sha256(Path(windows.ckpt, ck.COMMIT_MARKER).read_bytes()).hexdigest()
    )
    assert b.record()["sha256"] == hashlib.sha256((out / ex.WEIGHTS_FILE).read_bytes()).hexdigest()
    assert a.record()["step"] == b.record()["step"] == W1_STEPS
    assert a.rows.keys() == b.rows.keys()
    for k in a.rows:
        assert torch.equal(a.rows[k].src, b.rows[k].src), k


def test_item_ids_unknown_is_refused(windows):
    """A checkpoint without dataset.json whose dataset is gone cannot map rows of an unrelated dataset."""
    cfg = cfg2(windows, windows.d2_fresh)
    trained = ex.load_trained(windows.ckpt)
    trained = dataclasses.replace(trained, dataset=None, train_config=None)
    manifest = Manifest.load(windows.d2_fresh).data
    with pytest.raises(ConfigError, match="does not record which item each row of item_embedding.weight is"):
        warm_start.plan(windows.ckpt, trained, cfg.model, manifest, sha_of(windows.d2_fresh), 64, lambda: [])


def test_resume_takes_precedence_over_init_from(windows):
    """run_name w1 already has a committed checkpoint: preflight resumes it and plans no warm start."""
    cfg = train_config(
        overrides(windows.d1, windows.llm_dir, windows.runs, "run_name=w1", f"init_from={windows.ckpt}")
    )
    pre = preflight(cfg)
    assert pre.resume_from == windows.ckpt and pre.resume_step == W1_STEPS
    assert pre.init_from is None


def test_preflight_reports_the_warm_start(windows):
    cfg = cfg2(windows, windows.d2_fresh)
    pre = preflight(cfg)
    assert pre.resume_from is None
    assert pre.init_from is not None and pre.init_from["item_rows"] == "item_id"
    assert pre.init_from["url"] == windows.ckpt and pre.init_from["step"] == W1_STEPS
    assert "30 carried, 11 new" in pre.init_summary
