"""cluster/gpu_bench.sh's suite in --tiny mode (the whole GPU script on the CPU with tiny shapes):
every section runs or is recorded, one JSON with the generation rows (token-identical to Hugging
Face generate), the training rows, DeepCompile refused on a CPU as an error, not a crash; and the
guarded runner turns a failing or hanging section into a status instead of ending the run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from seller_dist.bench import gpu
from seller_dist.bench.eval import DEFAULT_DECODE_VARIANTS

OWN = [n for n, (kind, _, _) in gpu.SECTIONS.items() if kind != "cli"]


def test_tiny_suite_writes_one_json_with_every_section(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "seller_dist.bench.gpu", "--suite", "--tiny", "--out", str(out)]
    # the CLI sections (`bench train --gpu`) belong to another mode; the runner is tested below
    proc = subprocess.run(
        [*cmd, "--sections", ",".join(OWN)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["suite"] == "gpu" and result["tiny"] is True and result["device"] == "cpu"
    assert result["provenance"]["commit"] and result["torch"] and result["wall_s"] > 0
    sections = result["sections"]
    assert list(sections) == OWN
    assert all(s["status"] in ("ok", "error", "timeout", "skipped") for s in sections.values())

    gen = sections["generate_8.8b"]
    assert gen["status"] == "ok", gen
    rows = gen["result"]["rows"]
    assert {(r["variant"], r["batch_size"]) for r in rows} == {
        (v, b) for v in DEFAULT_DECODE_VARIANTS for b in (2, 4)
    }
    for r in rows:
        assert r["new_tokens_per_s"] > 0 and r["ms_per_step"] > 0 and r["steps"] == 8
        if r["variant"] != "hf_default":  # greedy: every row the same tokens as HF generate
            assert r["identical_to_hf_default"] == r["batch_size"], r
    assert "static_compiled_over_hf_default_b4" in gen["result"]["ratios"]
    assert gen["result"]["fp32_check"]["passed"] is True

    train = sections["train_0.95b"]
    assert train["status"] == "ok", train
    assert {r["variant"] for r in train["result"]["runs"]} == {"eager", "deepspeed"}  # --tiny: no inductor
    dc = sections["deepcompile_0.95b"]
    assert dc["status"] == "error" and "CUDA-only" in " ".join(dc["errors"])
    assert sections["vllm"]["status"] == "skipped"

    summary = result["summary"]
    assert len(summary["generation"]) == len(rows) and summary["generation_ratios"]
    assert {r["variant"] for r in summary["training"]} >= {"eager", "deepspeed"}


def test_guarded_sections_record_failures_and_timeouts(tmp_path):
    out = str(tmp_path / "none.json")
    failed = gpu.run_section(
        [sys.executable, "-c", "import sys; print('no such mode'); sys.exit(2)"], 30, out
    )
    assert failed["status"] == "error" and failed["rc"] == 2 and "no such mode" in failed["error"]
    silent = gpu.run_section([sys.executable, "-c", "pass"], 30, out)  # exit 0 but no JSON written
    assert silent["status"] == "error"
    hung = gpu.run_section(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 2, out
    )
    assert hung["status"] == "timeout" and "started" in hung["error"] and hung["seconds"] < 30
    path = tmp_path / "ok.json"
    code = f"import json; json.dump({{'runs': [], 'errors': ['x/1: OOM']}}, open({str(path)!r}, 'w'))"
    ok = gpu.run_section([sys.executable, "-c", code], 30, str(path))
    assert ok["status"] == "ok" and ok["errors"] == ["x/1: OOM"]


def test_gpu_commands_of_the_suite():
    args = argparse.Namespace(tiny=False, seconds=6.0, chip="h200")
    cmd = gpu.section_command("bench_train_gpu", args, "/tmp/x.json")
    assert cmd[1:] == ["-m", "seller_dist.cli", "bench", "train", "--gpu", "--out", "/tmp/x.json"]
    cmd = gpu.section_command("train_0.95b", args, "/tmp/x.json")
    assert cmd[1:3] == ["-m", "seller_dist.bench.gpu"] and "--one-micro-batch" in cmd
    assert cmd[cmd.index("--variants") + 1] == "eager,compile,deepspeed,deepspeed_replicated_compile"
    assert gpu.tiny_argv(["--variants", "eager,compile,deepspeed_deepcompile"]) == [
        "--variants",
        "eager,deepspeed_deepcompile",
    ]
