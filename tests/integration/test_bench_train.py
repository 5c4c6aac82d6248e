"""`seller-dist bench train` on a tiny config: the plain loop and DeepSpeed ZeRO-3 (1 and 2 gloo
ranks) are really run, and the JSON holds every field with consistent numbers: the step-time parts
add up to no more than the step, samples = steps x batch x workers, the same first loss in every
mode (same model, data and seed), and ZeRO-3 gathers counted only where there is a second rank."""

from __future__ import annotations

import json

import pytest

from seller_dist.cli import main
from tests.train_helpers import prep_small

pytestmark = [pytest.mark.slow, pytest.mark.ray]

PARTS = ("data_wait", "forward", "backward", "optimizer", "communication", "other")
FIELDS = (
    "mode",
    "workers",
    "measured_steps",
    "samples",
    "llm_tokens",
    "samples_per_s",
    "tokens_per_s_per_worker",
    "cost_per_sample_worker_s",
    "step_time_s",
    "split_s",
    "split_fraction",
    "frozen_params",
    "trainable_params",
    "tflops_per_worker",
    "mfu",
    "peak_memory_mb_per_rank",
    "comm_total_by_kind",
    "first_losses",
    "job_wall_s",
)


def test_bench_train_plain_and_deepspeed(tmp_path, tiny_llm_dir, capsys):
    data = tmp_path / "data"
    prep_small(str(data))
    out = tmp_path / "bench.json"
    sets = [
        f"data.manifest={data}",
        f"model.llm_path={tiny_llm_dir}",
        "data.batch_size=4",
        "model.d_model=32",
        "model.num_layers=1",
        "model.expert_hidden=32",
    ]
    argv = ["bench", "train", "--modes", "plain,deepspeed,strategy", "--workers", "1,2", "--warmup", "1"]
    argv += ["--steps", "3", "--peak-tflops", "0.01", "--stream-batches", "3", "--work-dir", str(tmp_path)]
    argv += ["--out", str(out)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| mode | workers | samples/s |" in printed and "ratios: " in printed

    result = json.loads(out.read_text())
    assert result["provenance"]["commit"] and result["provenance"]["machine"]["cpus"] >= 1
    assert (
        result["config"]["data"]["batch_size"] == 4 and result["settings"]["peak_tflops_per_worker"] == 0.01
    )
    rows = {(r["mode"], r["workers"]): r for r in result["results"]}
    assert sorted(rows) == [
        ("deepspeed", 1),
        ("deepspeed", 2),
        ("plain", 1),
        ("strategy", 1),
        ("strategy", 2),
    ]
    for (_mode, workers), r in rows.items():
        assert all(k in r for k in FIELDS), [k for k in FIELDS if k not in r]
        assert r["measured_steps"] == 3
        assert r["samples"] == 3 * 4 * workers  # no stream pad rows this early in the epoch
        assert len(r["peak_memory_mb_per_rank"]) == workers and min(r["peak_memory_mb_per_rank"]) > 0
        assert set(r["split_s"]) == set(PARTS) and min(r["split_s"].values()) >= 0
        assert sum(r["split_s"][p] for p in PARTS[:-1]) <= r["step_time_s"] * (1 + 1e-9)
        assert r["samples_per_s"] == pytest.approx(r["samples"] / r["seconds"])
        assert r["mfu"] > 0 and r["llm_tokens"] > r["samples"]
    # the strategy alone: the same model, batches already on the device, the loss read at the end only
    assert rows[("strategy", 1)]["frozen_params"] == rows[("deepspeed", 1)]["frozen_params"]
    assert rows[("strategy", 1)]["trainable_params"] == rows[("deepspeed", 1)]["trainable_params"]
    # the same model, data and seed: the first step's loss agrees between the modes
    first = rows[("plain", 1)]["first_losses"][0]
    assert rows[("deepspeed", 1)]["first_losses"][0] == pytest.approx(first, rel=1e-5)
    assert rows[("plain", 1)]["frozen_params"] == rows[("deepspeed", 2)]["frozen_params"]
    # ZeRO-3 gathers the partitioned frozen LLM only when there is another rank to gather from
    assert rows[("deepspeed", 2)]["comm_total_by_kind"]["all_gather"]["bytes"] > 0
    assert "all_gather" not in rows[("plain", 1)]["comm_total_by_kind"]
    ratios = result["ratios"]
    assert set(ratios) == {
        "deepspeed_w1_over_plain",
        "deepspeed_w2_over_plain",
        "loop_over_strategy_throughput_w1",
        "loop_over_strategy_throughput_w2",
    }
    for w in (1, 2):
        expect = rows[("deepspeed", w)]["samples_per_s"] / rows[("strategy", w)]["samples_per_s"]
        assert ratios[f"loop_over_strategy_throughput_w{w}"] == pytest.approx(expect) and expect > 0
    assert result["stream"]["records_per_s"] > 0 and result["stream"]["stream_over_training"] > 0


def test_bench_train_gpu_mode_needs_a_gpu(capsys):
    with pytest.raises(SystemExit, match=r"^bench train --gpu: no CUDA device is visible"):
        main(["bench", "train", "--gpu", "--steps", "1"])
