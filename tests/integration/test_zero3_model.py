"""SellerModel inside a real DeepSpeed ZeRO-3 engine on 2 gloo ranks (CPU), experts parallel.

Checks: the frozen LLM is partitioned while loading (each rank stores about half), the first loss
on each rank equals a single-process reference of the same weights, one step changes every
trainable parameter (dense and every expert) and no frozen one, and the loss after that step
equals a single-process AdamW step on the mean loss (so gradient averaging, the expert-gradient
fixups and both optimizers are right).
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
import torch

from seller_dist.config import ModelConfig, OptimConfig
from seller_dist.model.vocab import ModelVocab
from tests.model_helpers import tiny_model_config
from tests.train_helpers import rank_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VOCAB = ModelVocab(num_items=30, attribute_sizes=[5, 4], text_dim=8)
LR = 1e-2
CLIP = 0.05  # well below the step-2 gradient norm, so clipping is active


def model_cfg(llm_dir: str) -> ModelConfig:
    return tiny_model_config(llm_dir, ep_size=2)


def rank_batch(llm, rank: int) -> dict[str, torch.Tensor]:
    from seller_dist.model.synthetic import synthetic_batch
    from tests.tiny_llm import token_ids_of

    return synthetic_batch(VOCAB, token_ids_of(llm), 8, 4, 6, seed=100 + rank)


def _rank_env(rank: int, world: int, port: int) -> None:
    rank_env(rank, world, port)
    torch.set_num_threads(1)


def _rank_main(
    rank: int, world: int, port: int, llm_dir: str, out_dir: str, bf16: bool = False, layout: str = "zero3"
) -> None:
    _rank_env(rank, world, port)
    code = 0
    import torch.distributed as dist

    try:
        import deepspeed

        from seller_dist.model.seller import SellerModel
        from seller_dist.train.strategy import DeepSpeedStrategy, StrategySettings

        settings = StrategySettings(micro_batch_size=4, bf16=bf16, persistence_threshold=0, llm_layout=layout)
        strategy = DeepSpeedStrategy(settings)
        strategy.init_distributed("gloo")
        cfg = model_cfg(llm_dir)
        llm = strategy.load_llm(cfg)
        frozen = list(llm.parameters())
        local_numel = sum(getattr(p, "ds_tensor", p).numel() for p in frozen)
        full_numel = sum(getattr(p, "ds_numel", p.numel()) for p in frozen)
        torch.manual_seed(0)
        model = SellerModel(cfg, VOCAB, llm, register_llm=strategy.registers_llm)
        state = strategy.prepare(model, OptimConfig(lr=LR))
        with deepspeed.zero.GatheredParameters(frozen):
            frozen_before = [p.detach().clone() for p in frozen]
        before = state.trainable_state_dict()
        batch = rank_batch(llm, rank)
        out = state.forward(batch)
        loss0 = float(out["loss"].detach())
        state.backward(out["loss"])
        from deepspeed.utils import safe_get_full_grad

        dense_grads = {  # the whole (rank-averaged) gradient of each partitioned dense parameter
            n: safe_get_full_grad(p).clone()
            for n, p in state.engine.module.named_parameters()
            if p.requires_grad and not n.startswith("llm.")
        }
        moe_grads = {n: p.grad.clone() for n, p in state.moe.named_parameters()}
        state.step()
        out = state.forward(batch)
        loss1 = float(out["loss"].detach())
        state.backward(out["loss"])  # a second step, clipped: Adam's 2nd update sees the clip factor
        norm2 = state.clip_grad_norm(CLIP)
        state.step()
        loss2 = float(state.forward(batch)["loss"])
        after = state.trainable_state_dict()
        with deepspeed.zero.GatheredParameters(frozen):
            frozen_same = all(torch.equal(a, p) for a, p in zip(frozen_before, frozen, strict=True))
        torch.save(
            {
                "local_numel": local_numel,
                "full_numel": full_numel,
                "loss0": loss0,
                "loss1": loss1,
                "moe_grads": moe_grads,
                "dense_grads": dense_grads,
                "norm2": norm2,
                "loss2": loss2,
                "before": before,
                "after": after,
                "frozen_same": frozen_same,
                "frozen_requires_grad": any(p.requires_grad for p in frozen),
                "local_experts": list(state.moe.experts),
                "dense_dtype": str(model.slots.ds_tensor.dtype),
                "llm_dtype": str(getattr(frozen[0], "ds_tensor", frozen[0]).dtype),
                "llm_in_engine": any(p is q for p in frozen for q in state.engine.module.parameters()),
                "moe_dtype": str(state.moe.w1.dtype),
                "moe_is_engine_param": any(
                    p is q for p in state.moe.parameters() for q in model.parameters()
                ),
            },
            Path(out_dir, f"rank{rank}.pt"),
        )
    except BaseException:
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os._exit(code)


def reference(llm_dir: str) -> dict:
    """Single process, no DeepSpeed: same seeds, loss per rank batch, one AdamW step on the mean."""
    from seller_dist.model.llm import FrozenLLM
    from seller_dist.model.seller import SellerModel

    llm = FrozenLLM.from_pretrained(llm_dir)
    torch.manual_seed(0)
    model = SellerModel(model_cfg(llm_dir), VOCAB, llm)
    cfg1 = model.cfg
    cfg1.ep_size = 1  # all experts in one process, same full init as the two halves
    moe = model.make_moe()
    init = {n: p.detach().clone() for n, p in model.trainable_named_parameters()}
    init.update({f"moe.{k}": v.clone() for k, v in moe.state_dict().items()})
    params = [p for _, p in model.trainable_named_parameters()]
    # weight_decay=0.0: OptimConfig's default, which the strategy got (torch's AdamW default is 0.01)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    moe_opt = torch.optim.AdamW(moe.parameters(), lr=LR, weight_decay=0.0)
    batches = [rank_batch(llm, r) for r in range(2)]
    model.train()
    losses = [model(b, moe=moe)["loss"] for b in batches]
    (sum(losses) / 2).backward()
    moe_grads = {n: p.grad.clone() for n, p in moe.named_parameters()}
    dense_grads = {n: p.grad.clone() for n, p in model.trainable_named_parameters()}
    opt.step()
    moe_opt.step()
    opt.zero_grad()
    moe_opt.zero_grad()
    losses1 = [model(b, moe=moe)["loss"] for b in batches]
    (sum(losses1) / 2).backward()
    norm2 = float(torch.nn.utils.clip_grad_norm_(params + list(moe.parameters()), CLIP))
    opt.step()
    moe_opt.step()
    loss2 = [float(model(b, moe=moe)["loss"].detach()) for b in batches]
    loss1 = [float(x.detach()) for x in losses1]
    return {
        "init": init,
        "loss0": [float(x.detach()) for x in losses],
        "loss1": loss1,
        "loss2": loss2,
        "norm2": norm2,
        "moe_grads": moe_grads,
        "dense_grads": dense_grads,
    }


def spawn_ranks(llm_dir: str, out: Path, bf16: bool, fn=None, layout: str = "zero3") -> list[dict]:
    from tests.conftest import free_port
    from tests.ranks import spawn_ranks

    try:
        args = (2, free_port(), llm_dir, str(out), bf16) + ((layout,) if fn is None else ())
        spawn_ranks(fn or _rank_main, args, 2)
    except Exception as e:
        errs = "\n".join(p.read_text()[-4000:] for p in sorted(out.glob("*.err")))
        raise AssertionError(f"a rank failed: {e}\n{errs}") from None
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def zero3_results(tiny_llm_dir, tmp_path_factory) -> list[dict]:
    return spawn_ranks(tiny_llm_dir, tmp_path_factory.mktemp("zero3"), bf16=False)


def test_frozen_llm_is_partitioned_and_untouched(zero3_results):
    for r in zero3_results:
        assert r["local_numel"] < r["full_numel"]
        assert r["local_numel"] <= r["full_numel"] // 2 + 64 * 40  # about half (+ alignment padding)
        assert r["frozen_same"] and not r["frozen_requires_grad"]
        assert not r["moe_is_engine_param"]  # experts live outside the ZeRO-3 engine
    assert [r["local_experts"] for r in zero3_results] == [[0, 1], [2, 3]]


def test_replicated_llm_layout_trains_exactly_like_zero3(zero3_results, tiny_llm_dir, tmp_path_factory):
    """train.llm_layout=replicated: a whole frozen LLM on each rank, outside the ZeRO-3 engine (no
    gathers, so torch.compile can fuse it); the same losses, joint clip norm and updated weights."""
    out = spawn_ranks(tiny_llm_dir, tmp_path_factory.mktemp("replicated"), bf16=False, layout="replicated")
    for rank, (r, z) in enumerate(zip(out, zero3_results, strict=True)):
        assert r["local_numel"] == r["full_numel"] == z["full_numel"]  # a whole copy on each rank
        assert z["llm_in_engine"] and not r["llm_in_engine"]
        assert r["frozen_same"] and not r["frozen_requires_grad"]
        for key in ("loss0", "loss1", "loss2", "norm2"):
            assert r[key] == pytest.approx(z[key], abs=1e-6), (rank, key)
        assert set(r["after"]) == set(z["after"])
        for k, v in r["after"].items():
            # attention KEY biases have a zero gradient in exact arithmetic (softmax ignores a shift
            # shared by every key), so theirs is rounding noise that Adam's first steps can turn into
            # +-LR moves: they change no output, so they are left out. atol: the rest still carries
            # Adam-amplified noise of ~LR * 1e-2
            a, b = without_key_bias(k, v), without_key_bias(k, z["after"][k])
            torch.testing.assert_close(a, b, atol=5e-4, rtol=0, msg=f"rank {rank} {k}")


def without_key_bias(name: str, t: torch.Tensor) -> torch.Tensor:
    """The bias of a fused attention projection without its key part (fusion.kv = [k | v],
    CausalBlock.qkv = [q | k | v]); any other tensor unchanged."""
    if name.endswith("fusion.kv.bias"):
        return t[t.numel() // 2 :]
    if name.endswith("qkv.bias"):
        d = t.numel() // 3
        return torch.cat([t[:d], t[2 * d :]])
    return t


def test_loss_and_one_step_match_single_process(zero3_results, tiny_llm_dir):
    ref = reference(tiny_llm_dir)
    for rank, r in enumerate(zero3_results):
        assert set(r["before"]) == set(ref["init"])
        for k, v in r["before"].items():
            torch.testing.assert_close(v, ref["init"][k], msg=f"initial {k}")
        assert r["loss0"] == pytest.approx(ref["loss0"][rank], abs=1e-5)
        assert r["loss1"] == pytest.approx(ref["loss1"][rank], abs=1e-4)
        assert r["loss1"] < r["loss0"] - 1e-3
        assert ref["norm2"] > 2 * CLIP
        assert r["norm2"] == pytest.approx(ref["norm2"], rel=1e-4)  # engine + MoE norms combined
        assert r["loss2"] == pytest.approx(ref["loss2"][rank], abs=1e-4)
        # AdamW's first step is blind to a gradient's scale: check the gradients themselves, the dense
        # ones gathered from ZeRO-3's partitions
        assert set(r["dense_grads"]) == set(ref["dense_grads"])
        for n, g in r["dense_grads"].items():
            torch.testing.assert_close(
                g, ref["dense_grads"][n], atol=1e-7, rtol=1e-4, msg=f"rank {rank} grad {n}"
            )
        # MoE (experts: this rank's half of the mean-loss gradient; router: the whole of it)
        for n, g in r["moe_grads"].items():
            want = ref["moe_grads"][n]
            want = want[rank * 2 : rank * 2 + 2] if n in ("w1", "b1", "w2", "b2") else want
            torch.testing.assert_close(g, want, atol=1e-6, rtol=1e-4, msg=f"rank {rank} grad {n}")


def test_one_step_changes_every_trainable_parameter(zero3_results):
    for r in zero3_results:
        unchanged = [k for k in r["before"] if torch.equal(r["before"][k], r["after"][k])]
        assert not unchanged, unchanged
        assert any(k.startswith("moe.w1") for k in r["before"])
    a, b = (r["after"] for r in zero3_results)
    for k in a:  # ranks agree on every trainable parameter after the step
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


def test_bf16_engine_trains_with_fp32_router_and_experts(tiny_llm_dir, tmp_path_factory, zero3_results):
    """bf16 ZeRO-3: the frozen LLM in bf16, the small trainables and the MoE (outside the engine)
    in fp32; losses close to fp32 and the same joint clipping works."""
    results = spawn_ranks(tiny_llm_dir, tmp_path_factory.mktemp("zero3_bf16"), bf16=True)
    for r, fp32 in zip(results, zero3_results, strict=True):
        assert r["llm_dtype"] == "torch.bfloat16"
        assert r["dense_dtype"] == "torch.float32" and r["moe_dtype"] == "torch.float32"
        assert fp32["llm_dtype"] == "torch.float32"
        assert r["loss0"] == pytest.approx(fp32["loss0"], abs=0.05)
        assert r["loss1"] < r["loss0"] - 1e-3
        assert r["norm2"] == pytest.approx(fp32["norm2"], rel=0.1)
        assert r["frozen_same"]


def halves(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)]


def _rank_main_accumulation(rank: int, world: int, port: int, llm_dir: str, out_dir: str, bf16: bool) -> None:
    """Two micro-batches of 2 rows per step (gradient_accumulation_steps=2)."""
    _rank_env(rank, world, port)
    code = 0
    import torch.distributed as dist

    try:
        from seller_dist.model.seller import SellerModel
        from seller_dist.train.strategy import DeepSpeedStrategy, StrategySettings

        strategy = DeepSpeedStrategy(
            StrategySettings(micro_batch_size=2, grad_accum=2, persistence_threshold=0)
        )
        strategy.init_distributed("gloo")
        cfg = model_cfg(llm_dir)
        llm = strategy.load_llm(cfg)
        torch.manual_seed(0)
        state = strategy.prepare(SellerModel(cfg, VOCAB, llm), OptimConfig(lr=LR))
        batch = rank_batch(llm, rank)
        boundaries = []
        for micro in halves(batch):
            out = state.forward(micro)
            boundaries.append(state.engine.is_gradient_accumulation_boundary())
            state.backward(out["loss"])
            if boundaries[-1]:
                moe_grads = {n: p.grad.clone() for n, p in state.moe.named_parameters()}
            state.step()
        loss1 = float(state.forward(batch)["loss"].detach())
        torch.save(
            {"boundaries": boundaries, "moe_grads": moe_grads, "loss1": loss1},
            Path(out_dir, f"rank{rank}.pt"),
        )
    except BaseException:
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os._exit(code)


def test_gradient_accumulation_matches_single_process(tiny_llm_dir, tmp_path_factory):
    from seller_dist.model.llm import FrozenLLM
    from seller_dist.model.seller import SellerModel

    results = spawn_ranks(
        tiny_llm_dir, tmp_path_factory.mktemp("zero3_gas"), bf16=False, fn=_rank_main_accumulation
    )
    llm = FrozenLLM.from_pretrained(tiny_llm_dir)
    torch.manual_seed(0)
    model = SellerModel(model_cfg(tiny_llm_dir), VOCAB, llm)
    model.cfg.ep_size = 1
    moe = model.make_moe()
    params = [p for _, p in model.trainable_named_parameters()] + list(moe.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    model.train()
    batches = [rank_batch(llm, r) for r in range(2)]
    # each rank's loss is the mean of its two micro-batch losses; ranks are averaged
    losses = [model(h, moe=moe)["loss"] for b in batches for h in halves(b)]
    (sum(losses) / 4).backward()
    ref_grads = {n: p.grad.clone() for n, p in moe.named_parameters()}
    opt.step()
    for rank, r in enumerate(results):
        assert r["boundaries"] == [False, True]
        for n, g in r["moe_grads"].items():
            want = ref_grads[n][rank * 2 : rank * 2 + 2] if n in ("w1", "b1", "w2", "b2") else ref_grads[n]
            torch.testing.assert_close(g, want, atol=1e-6, rtol=1e-4, msg=f"rank {rank} grad {n}")
        ref_loss1 = float(model(batches[rank], moe=moe)["loss"].detach())
        assert r["loss1"] == pytest.approx(ref_loss1, abs=1e-4)
