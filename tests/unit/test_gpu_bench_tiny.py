"""cluster/gpu_bench.sh's suite in --tiny mode (`seller-dist bench gpu --suite --tiny`: the whole
GPU script on the CPU with tiny shapes, and without Ray, as on the GPU machine): every section runs
or is recorded, one JSON with the generation rows (token-identical to Hugging Face generate), the
training rows, DeepCompile refused on a CPU as an error, not a crash; and the guarded runner turns a
failing or hanging section into a status instead of ending the run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

from seller_dist.bench import gpu
from seller_dist.bench.eval import DEFAULT_DECODE_VARIANTS
from seller_dist.cli import bench as cli_bench
from seller_dist.cli.options import options_from

OWN = [n for n, (kind, _, _) in gpu.SECTIONS.items() if kind != "cli"]

# `python -m seller_dist.cli ARGS` in a process where `import ray` fails, as where Ray is not installed
WITHOUT_RAY = """import runpy, sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoRay())
runpy.run_module("seller_dist.cli", run_name="__main__", alter_sys=True)
"""


def test_tiny_suite_writes_one_json_with_every_section(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", WITHOUT_RAY, "bench", "gpu", "--suite", "--tiny", "--out", str(out)]
    # the CLI sections (`bench train --gpu`) belong to another mode; the runner is tested below
    proc = subprocess.run(
        [*cmd, "--sections", ",".join(OWN)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["suite"] == "gpu" and result["tiny"] is True and result["device"] == "cpu"
    assert result["provenance"]["commit"] and result["torch"] and result["wall_s"] > 0
    assert result["provenance"]["command"].startswith("seller-dist bench gpu --suite --tiny")
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
    opts = gpu.GpuBenchOptions(suite=True, seconds=6.0, chip="h100")
    cmd = gpu.section_command("bench_train_gpu", opts, "/tmp/x.json")
    assert cmd[1:] == ["-m", "seller_dist.cli", "bench", "train", "--gpu", "--out", "/tmp/x.json"]
    cmd = gpu.section_command("train_0.95b", opts, "/tmp/x.json")
    assert cmd[1:5] == ["-m", "seller_dist.cli", "bench", "gpu"] and "--one-micro-batch" in cmd
    assert cmd[cmd.index("--variants") + 1] == "eager,compile,deepspeed,deepspeed_replicated_compile"
    cmd = gpu.section_command("generate_8.8b", opts, "/tmp/x.json", deadline_s=170.0)
    assert cmd[cmd.index("--deadline-seconds") + 1] == "170.0"

    # what a section's process parses is the options the section runs with in process
    parser = argparse.ArgumentParser()
    cli_bench.add_arguments(parser)
    for name in [n for n, (kind, _, _) in gpu.SECTIONS.items() if kind == "gpu"]:
        fields = gpu.section_options(name, opts, "x")
        argv = gpu.section_command(name, opts, "x")[4:]  # after `python -m seller_dist.cli bench`
        assert options_from(gpu.GpuBenchOptions, parser.parse_args(argv)) == gpu.GpuBenchOptions(**fields)
        assert fields["chip"] == "h100" and fields["seconds"] == 6.0

    tiny = dataclasses.replace(opts, tiny=True)  # no inductor compiles; DeepCompile stays (refused at once)
    assert gpu.section_options("train_0.95b", tiny, "x")["variants"] == "eager,deepspeed"
    assert gpu.section_options("deepcompile_0.95b", tiny, "x")["variants"] == "deepspeed_deepcompile"
