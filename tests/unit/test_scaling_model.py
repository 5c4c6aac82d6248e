"""The multi-node cost model (tools.scaling_model, docs/scaling.md): its arithmetic by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tools.scaling_model import (
    LLAMA_8B,
    LLAMA_70B,
    ClusterSpec,
    LLMSpec,
    PrepCluster,
    Workload,
    fit_wall,
    flops_per_token,
    predict,
    prep_cost,
    step_cost,
)

TOY = LLMSpec("toy", params=1e9, layers=10, hidden=1000)


def test_flops_per_token_is_4n_frozen_plus_6n_trainable_per_sample_plus_attention():
    w = Workload(seq_len=100, trainable_params=1e6, attention=False)
    assert flops_per_token(TOY, w) == 4e9 + 6e6 / 100
    with_attn = Workload(seq_len=100, trainable_params=1e6, attention=True)
    assert flops_per_token(TOY, with_attn) == 4e9 + 6e6 / 100 + 6 * 10 * 100 * 1000


def test_zero3_step_on_one_node_by_hand():
    w = Workload(seq_len=100, micro_batch=2, trainable_params=0.0, attention=False, ep_size=1, param_bytes=2)
    c = ClusterSpec(
        gpus=4, gpus_per_node=8, peak_tflops=100.0, efficiency=0.5, intra_node_gbs=100.0, overlap=0.0
    )
    r = step_cost(TOY, w, c, "zero3")
    assert r["compute_s"] == pytest.approx(200 * 4e9 / 50e12)  # 200 tokens x 4N at 50 TFLOP/s
    assert r["gather_bytes"] == pytest.approx(2 * 1e9 * 2 * 3 / 4)  # two passes, 3/4 received
    assert r["gather_s"] == pytest.approx(r["gather_bytes"] / 100e9)
    assert r["step_s"] == pytest.approx(r["compute_s"] + r["comm_s"])  # no overlap
    assert r["tokens_per_s"] == pytest.approx(4 * 200 / r["step_s"])
    full = step_cost(TOY, w, ClusterSpec(**{**c.__dict__, "overlap": 1.0}), "zero3")
    assert full["step_s"] == pytest.approx(max(full["compute_s"], full["comm_s"]))


def test_layouts_across_nodes():
    w = Workload(trainable_params=0.0, ep_size=1)
    c = ClusterSpec(gpus=16, gpus_per_node=8, inter_node_gbs=10.0, intra_node_gbs=100.0)
    z, h, n, rep = (step_cost(TOY, w, c, lay) for lay in ("zero3", "hpz", "node", "replicated"))
    assert z["gather_s"] == pytest.approx(2 * 2e9 * 15 / 16 / 10e9)  # both passes over the NICs
    assert h["gather_s"] == pytest.approx(2e9 * 15 / 16 / 10e9 + 2e9 * 7 / 8 / 100e9)
    assert n["gather_s"] == pytest.approx(2 * 2e9 * 7 / 8 / 100e9)  # both passes over NVLink
    assert rep["gather_bytes"] == 0 and rep["frozen_weights_gb_per_gpu"] == pytest.approx(2.0)
    assert z["step_s"] > h["step_s"] > n["step_s"] > rep["step_s"]
    with pytest.raises(ValueError, match="layout must be one of"):
        step_cost(TOY, w, c, "tp")


def test_predict_covers_8b_and_70b_on_8_to_64_gpus():
    rows = predict()
    assert {(r["llm"], r["gpus"]) for r in rows} == {
        (m.name, g) for m in (LLAMA_8B, LLAMA_70B) for g in (8, 16, 32, 64)
    }
    seventy = {(r["gpus"], r["layout"]): r for r in rows if r["llm"] == LLAMA_70B.name}
    assert not seventy[(8, "replicated")]["fits"]  # 141 GB of bf16 weights on an 80 GB GPU
    # node-local partitioning scales linearly past one node; plain ZeRO-3 drops at the node boundary
    assert seventy[(64, "node")]["tokens_per_s"] == pytest.approx(
        8 * seventy[(8, "node")]["tokens_per_s"], rel=0.01
    )
    assert (
        seventy[(16, "zero3")]["tokens_per_s_per_gpu"] < 0.7 * seventy[(8, "zero3")]["tokens_per_s_per_gpu"]
    )


def test_fit_wall_is_the_line_through_two_runs():
    assert fit_wall([(4000, 14.0), (2000, 10.0)]) == pytest.approx((6.0, 0.002))
    with pytest.raises(ValueError, match="two different sizes"):
        fit_wall([(1000, 1.0), (1000, 2.0)])


def test_prep_cost_by_hand():
    """P = max(8 per CPU, E / pme) (the code's cut_plan), M = E / pme map tasks, the CPU term spread
    over every CPU, the output (records x bytes per record) uploaded at the nodes' rate."""
    c = PrepCluster(nodes=2, cpu_s_per_event=1e-4, records_per_event=0.5, cpus_per_node=4)
    c = replace(c, partition_max_events=1000, bytes_per_record=2000.0, upload_gbs_per_node=0.5)
    r = prep_cost(100_000, c)
    assert r["cpus"] == 8 and r["cut_tasks"] == 100 and r["map_tasks"] == 100  # E / pme > 8 x 8
    assert r["events_per_cut_task"] == 1000
    assert r["cpu_s"] == pytest.approx(1e-4 * 100_000 / 8)
    assert r["parsed_bytes_per_node"] == pytest.approx(100_000 * 80.0 / 2)
    assert r["driver_shuffle_index_bytes"] == 100 * 100 * 32
    assert r["upload_s"] == pytest.approx(100_000 * 0.5 * 2000 / (2 * 0.5e9))
    assert r["wall_s"] == pytest.approx(r["cpu_s"] + r["upload_s"])
    small = prep_cost(10_000, c)
    assert small["cut_tasks"] == 64 and small["map_tasks"] == 10  # the 8-per-CPU floor
