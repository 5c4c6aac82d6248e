"""train.llm_layout=node on 4 gloo ranks taken as 2 "nodes" of 2 (llm_shard_size=2): the frozen LLM
is partitioned inside each node and replicated across nodes, and training gives the same losses,
clip norm and trainable weights as llm_layout=zero3 (partitioned over all 4) and replicated (whole
on each). One spawn of 4 ranks runs the layouts one after the other (CI has 2 cores): per layout
two optimizer steps (the second clipped), the same seed and data."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
import torch

from tests.integration.test_zero3_model import CLIP, LR, VOCAB, model_cfg, rank_batch, without_key_bias
from tests.train_helpers import rank_env

pytestmark = pytest.mark.slow

WORLD, SHARD = 4, 2
LAYOUTS = ("zero3", "node", "replicated", "hpz")


def _run_layout(layout: str, llm_dir: str, rank: int) -> dict:
    import torch.distributed as dist

    from seller_dist.config import OptimConfig
    from seller_dist.model.seller import SellerModel
    from seller_dist.train.strategy import DeepSpeedStrategy, StrategySettings

    shard = SHARD if layout in ("node", "hpz") else 0  # llm_shard_size applies to those two only
    settings = StrategySettings(
        4, persistence_threshold=0, llm_layout=layout, llm_shard_size=shard, world_size=WORLD
    )
    strategy = DeepSpeedStrategy(settings)
    cfg = model_cfg(llm_dir)
    llm = strategy.load_llm(cfg)
    frozen = list(llm.parameters())
    torch.manual_seed(0)
    model = SellerModel(cfg, VOCAB, llm, register_llm=strategy.registers_llm)
    state = strategy.prepare(model, OptimConfig(lr=LR))
    batch = rank_batch(llm, rank)
    losses, norm = [], 0.0
    for step in range(2):
        out = state.forward(batch)
        losses.append(float(out["loss"].detach()))
        state.backward(out["loss"])
        if step == 1:
            norm = state.clip_grad_norm(CLIP)
        state.step()
    losses.append(float(state.forward(batch)["loss"].detach()))
    groups = {  # the ranks each frozen parameter is partitioned over (gathered from)
        tuple(dist.get_process_group_ranks(p.ds_process_group)) if hasattr(p, "ds_process_group") else (rank,)
        for p in frozen
    }
    secondary = [getattr(p, "ds_secondary_tensor", None) for p in frozen]
    dense = [p for _, p in model.trainable_named_parameters()]
    dense_groups = {tuple(dist.get_process_group_ranks(p.ds_process_group)) for p in dense}
    return {
        "losses": losses,
        "norm": norm,
        "after": state.trainable_state_dict(),
        "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in frozen),
        "local_numel": sum(getattr(p, "ds_tensor", p).numel() for p in frozen),
        "secondary_numel": sum(s.numel() for s in secondary if s is not None),
        "groups": sorted(groups),
        "dense_groups": sorted(dense_groups),
        "llm_in_engine": any(p is q for p in frozen for q in state.engine.module.parameters()),
    }


def _rank_main(rank: int, world: int, port: int, llm_dir: str, out_dir: str) -> None:
    rank_env(rank, world, port)
    os.environ["LOCAL_WORLD_SIZE"] = str(SHARD)  # 2 ranks per "node"
    torch.set_num_threads(1)
    code = 0
    import torch.distributed as dist

    try:
        from seller_dist.train.strategy import DeepSpeedStrategy

        DeepSpeedStrategy.init_distributed("gloo")
        results = {layout: _run_layout(layout, llm_dir, rank) for layout in LAYOUTS}
        torch.save(results, Path(out_dir, f"rank{rank}.pt"))
    except BaseException:
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os._exit(code)


@pytest.fixture(scope="module")
def results(tiny_llm_dir, tmp_path_factory) -> list[dict]:
    from tests.conftest import free_port
    from tests.ranks import spawn_ranks

    out = tmp_path_factory.mktemp("llm_layouts")
    try:
        spawn_ranks(_rank_main, (WORLD, free_port(), tiny_llm_dir, str(out)), WORLD)
    except Exception as e:
        errs = "\n".join(p.read_text()[-4000:] for p in sorted(out.glob("*.err")))
        raise AssertionError(f"a rank failed: {e}\n{errs}") from None
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_node_layout_shards_inside_nodes_and_trains_like_zero3_and_replicated(results):
    for rank, r in enumerate(results):
        zero3, node, replicated = r["zero3"], r["node"], r["replicated"]
        full = zero3["full_numel"]
        assert node["full_numel"] == replicated["full_numel"] == full
        # each rank holds 1/2 of the frozen LLM under node (1/4 under zero3, all of it replicated);
        # slack: ZeRO-3 pads every parameter's partition to a multiple of the group size
        assert full // 2 <= node["local_numel"] <= full // 2 + 2 * 64, (rank, node["local_numel"], full)
        assert full // 4 <= zero3["local_numel"] <= full // 4 + 4 * 64
        assert replicated["local_numel"] == full
        # ... and gathers it only from its own node
        assert node["groups"] == ([(0, 1)] if rank < 2 else [(2, 3)]), node["groups"]
        assert zero3["groups"] == [(0, 1, 2, 3)]
        assert node["dense_groups"] == zero3["dense_groups"] == [(0, 1, 2, 3)]  # trainables: all ranks
        assert node["llm_in_engine"] and not replicated["llm_in_engine"]
        for other in ("zero3", "replicated"):
            o = r[other]
            assert node["losses"] == pytest.approx(o["losses"], abs=1e-5), (
                rank,
                other,
            )  # 4-rank sums: float noise
            assert node["norm"] == pytest.approx(o["norm"], rel=1e-5), (rank, other)
            assert set(node["after"]) == set(o["after"])
            for k, v in node["after"].items():
                # attention KEY biases move by rounding noise only (test_zero3_model.py explains)
                torch.testing.assert_close(
                    without_key_bias(k, v), without_key_bias(k, o["after"][k]), atol=5e-4, rtol=0,
                    msg=f"rank {rank} {other} {k}",
                )  # fmt: skip
    assert results[0]["node"]["losses"][1] < results[0]["node"]["losses"][0]  # it trains


def test_hpz_layout_keeps_a_node_local_secondary_copy_and_trains_like_zero3(results):
    for rank, r in enumerate(results):
        hpz, zero3 = r["hpz"], r["zero3"]
        full = zero3["full_numel"]
        assert full // 4 <= hpz["local_numel"] <= full // 4 + 4 * 64  # primary: over all 4 ranks
        assert full // 2 <= hpz["secondary_numel"] <= full // 2 + 2 * 64  # secondary: inside the node
        assert hpz["losses"] == pytest.approx(zero3["losses"], abs=1e-5), rank
        assert hpz["norm"] == pytest.approx(zero3["norm"], rel=1e-5), rank
        for k, v in hpz["after"].items():
            torch.testing.assert_close(
                without_key_bias(k, v), without_key_bias(k, zero3["after"][k]), atol=5e-4, rtol=0,
                msg=f"rank {rank} {k}",
            )  # fmt: skip
