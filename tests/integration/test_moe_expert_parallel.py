"""Expert parallelism on 2 real gloo ranks equals a single-process reference of the same weights.

Each rank holds half the experts; tokens travel by all-to-all. Checked per scenario: outputs, input
gradients, expert and router gradients after `reduce_moe_gradients` (= gradient of the mean loss over
ranks), drop counts, local parameter counts, and a full-state gather. Degenerate routings: one rank
sends ALL its tokens to the other's experts while two experts get none; one rank has no tokens.
"""

from __future__ import annotations

import os
import traceback
import zlib
from pathlib import Path

import pytest
import torch

from seller_dist.model.expert_parallel import ExpertParallelGroups, reduce_moe_gradients
from seller_dist.model.moe import MoEAdapter

pytestmark = pytest.mark.slow

E, D_IN, D_H, D_OUT, AUX = 4, 8, 16, 6, 0.1
SCENARIOS: dict[str, dict] = {
    "random_top2": dict(k=2, cf=0.0, n=(10, 7), bias=None, ep=2),
    "capacity_top1": dict(k=1, cf=1.0, n=(12, 9), bias=None, ep=2),
    # every token (both ranks) goes to experts 2 and 3 (rank 1): rank 0 sends all it has and its
    # experts 0 and 1 receive nothing
    "all_to_rank1": dict(k=2, cf=0.0, n=(8, 6), bias=[-9.0, -9.0, 5.0, 5.0], ep=2),
    "rank1_empty": dict(k=2, cf=0.0, n=(9, 0), bias=None, ep=2),
    # ep_size=1 on 2 ranks: full experts everywhere, expert grads all-reduced over the data-parallel group
    "data_parallel_only": dict(k=2, cf=0.0, n=(7, 11), bias=None, ep=1),
}


def inputs(name: str, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}/{rank}".encode()))
    n = SCENARIOS[name]["n"][rank]
    return torch.randn(n, D_IN, generator=g), torch.randn(n, D_OUT, generator=g)


def build(name: str, groups: ExpertParallelGroups | None = None) -> MoEAdapter:
    s = SCENARIOS[name]
    torch.manual_seed(0)  # the replicated router is initialised identically everywhere
    m = MoEAdapter(D_IN, D_H, D_OUT, E, top_k=s["k"], capacity_factor=s["cf"], groups=groups)
    if s["bias"] is not None:
        with torch.no_grad():
            m.router.proj.weight.mul_(0.01)
            m.router.proj.bias.copy_(torch.tensor(s["bias"]))
    return m


def rank_loss(m: MoEAdapter, x: torch.Tensor, w: torch.Tensor):
    o = m(x)
    return (o.out * w).sum() + AUX * o.aux_loss, o


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    code = 0
    try:
        groups = {ep: ExpertParallelGroups.create(ep) for ep in (2, 1)}  # same order on every rank
        results = {}
        for name, s in SCENARIOS.items():
            m = build(name, groups[s["ep"]])
            x, w = inputs(name, rank)
            x.requires_grad_(True)
            loss, o = rank_loss(m, x, w)
            loss.backward()
            reduce_moe_gradients(m, groups[s["ep"]])
            results[name] = {
                "out": o.out.detach(),
                "x_grad": x.grad,
                "grads": {n: p.grad.clone() for n, p in m.named_parameters()},
                "dropped": int(o.dropped),
                "local_experts": list(m.experts),
                "expert_numel": sum(p.numel() for p in m.parameters() if getattr(p, "is_expert", False)),
                "full_state": m.full_state_dict(),
            }
        torch.save(results, Path(out_dir, f"rank{rank}.pt"))
    except BaseException:
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        code = 1
    finally:
        dist.destroy_process_group()
        os._exit(code)  # gloo can abort at interpreter exit: leave without running exit handlers


def reference(name: str) -> dict:
    """Single process, all experts, each rank's batch separately; grads of the mean loss."""
    m = build(name)
    outs, x_grads, dropped = [], [], []
    total = 0.0
    for r in range(2):
        x, w = inputs(name, r)
        x.requires_grad_(True)
        loss, o = rank_loss(m, x, w)
        (loss / 2).backward()
        total = total + loss
        outs.append(o.out.detach())
        x_grads.append(x.grad * 2)  # rank r differentiates its own (unhalved) loss
        dropped.append(int(o.dropped))
    return {
        "out": outs,
        "x_grad": x_grads,
        "grads": {n: p.grad for n, p in m.named_parameters()},
        "dropped": dropped,
        "state": m.state_dict(),
    }


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    from tests.conftest import free_port
    from tests.ranks import spawn_ranks

    out = tmp_path_factory.mktemp("ep")
    try:
        spawn_ranks(_rank_main, (2, free_port(), str(out)), 2)
    except Exception as e:
        errs = "\n".join(p.read_text() for p in sorted(out.glob("*.err")))
        raise AssertionError(f"a rank failed: {e}\n{errs}") from None
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_expert_parallel_matches_single_process(rank_results, name):
    ref = reference(name)
    s = SCENARIOS[name]
    for r in range(2):
        got = rank_results[r][name]
        torch.testing.assert_close(got["out"], ref["out"][r], atol=1e-5, rtol=1e-5)
        if s["n"][r]:
            torch.testing.assert_close(got["x_grad"], ref["x_grad"][r], atol=1e-5, rtol=1e-5)
        assert got["dropped"] == ref["dropped"][r]
        experts = range(r * 2, r * 2 + 2) if s["ep"] == 2 else range(E)
        assert got["local_experts"] == list(experts)
        full_numel = sum(ref["state"][k].numel() for k in ("w1", "b1", "w2", "b2"))
        assert got["expert_numel"] == full_numel // s["ep"]  # each rank stores only its experts
        sl = slice(experts.start, experts.stop)
        for n, g in got["grads"].items():
            want = ref["grads"][n][sl] if n in ("w1", "b1", "w2", "b2") else ref["grads"][n]
            torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-5, msg=f"rank {r} grad {n}")
        for k, v in got["full_state"].items():
            assert torch.equal(v, ref["state"][k]), k


def test_degenerate_routing_really_happened(rank_results):
    all_to_1 = rank_results[0]["all_to_rank1"]
    # rank 0's experts received nothing: their gradients are exactly zero, yet the step completed
    assert all(
        float(g.abs().sum()) == 0.0
        for n, g in all_to_1["grads"].items()
        if n != "router.proj.weight" and n != "router.proj.bias"
    )
    assert float(rank_results[1]["all_to_rank1"]["grads"]["w1"].abs().sum()) > 0
    assert rank_results[1]["rank1_empty"]["out"].shape == (0, D_OUT)
    assert rank_results[0]["capacity_top1"]["dropped"] + rank_results[1]["capacity_top1"]["dropped"] > 0
