#!/usr/bin/env bash
# The GPU benchmarks in one run (BENCHMARKS.md, "The one-run GPU suite"): about 7.5 minutes on an
# H200, one JSON in docs/bench/ (+ the log beside it). Random-weight Llama-style LLMs built from a
# config (no hub). Sections, in priority order, each in its own process with its own timeout, all
# under one budget (--budget, default 460 s; what does not fit is recorded as skipped):
#   generate_8.8b      the eval job's decoding at 8.8B (Llama-3-8B-shaped, full MHA), 256 prompt
#                      positions, 32 new tokens, greedy, batch 16 and 64: Hugging Face generate
#                      (default and static cache) against FrozenLLM.generate and the StaticDecoder
#                      (eager, compiled with CUDA graphs); tokens/s, ms/step, peak memory, token identity
#   train_0.95b        the training benchmark at 0.95B: eager, compile, DeepSpeed ZeRO-3 eager (the
#                      job's strategy), llm_layout=replicated + compile_llm; CUDA-vs-CPU check first
#   deepcompile_0.95b  ZeRO-3 with DeepSpeed's DeepCompile (train.deepcompile)
#   bench_train_gpu[_deepcompile]  `seller-dist bench train --gpu [--deepcompile]` (the real training
#                      loop on one GPU), guarded: a mode that is missing or fails is an error in the JSON
#   train_8.8b         the training benchmark at 8.8B, compiled, micro-batch 16
#   vllm               whether vLLM (prompt_embeds, the anchor for generation) is installed
#
#   cluster/gpu_bench.sh                        # the suite -> docs/bench/gpu-suite-h200-DATE.json + .log
#   cluster/gpu_bench.sh --chip h100 --budget 460 --sections generate_8.8b,train_0.95b
#   cluster/gpu_bench.sh --tiny                 # the whole suite on the CPU with tiny shapes, seconds
#   cluster/gpu_bench.sh train [ARGS]           # the training benchmark alone (seller-dist bench gpu)
#   cluster/gpu_bench.sh generate [ARGS]        # the generation benchmark alone (--generate)
#
# Python: the venv of `./launch.sh setup` (which reuses the host's CUDA torch on a GPU machine), or,
# on a closed GPU machine whose python already has torch + transformers (no package index):
#   SELLER_PYTHON=python3 cluster/gpu_bench.sh
# A copy of the tree without .git: SELLER_SOURCE_COMMIT=<the commit it was copied from> is recorded
# in the JSON as `stated_commit` (git status cannot check it there, so the tree stays "unknown").
# What such an image lacks (DeepSpeed and its pure-Python dependencies, pydantic) comes as wheels:
#   SELLER_WHEELS=DIR installs every DIR/*.whl offline into outputs/gpu-site/ (PYTHONPATH), nothing else.
#   Build DIR on a machine with an index, for the GPU host's python (here 3.12, x86_64):
#   pip wheel --no-deps -w DIR deepspeed==0.19.8       # a source archive on PyPI: pure-Python wheel
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d DIR pydantic pydantic-core annotated-types typing-inspection hjson msgpack einops py-cpuinfo \
#     ninja psutil tabulate                            # no torch/nvidia wheels: the image's CUDA torch stays
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${SELLER_PYTHON:-}" ]; then ./launch.sh setup; fi
PY="${SELLER_PYTHON:-${SELLER_VENV:-$ROOT/.venv}/bin/python}"
if [ -n "${SELLER_WHEELS:-}" ]; then
  "$PY" -m pip install --quiet --no-index --no-deps --target "$ROOT/outputs/gpu-site" "$SELLER_WHEELS"/*.whl ||
    "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$ROOT/outputs/gpu-site" "$SELLER_WHEELS"/*.whl  # no pip in the image: a wheel is a zip
  export PYTHONPATH="$ROOT/outputs/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# every JSON records its provenance (commit, clean or dirty tree, machine, command); a copy of the
# checkout without .git records the commit as unknown, plus SELLER_SOURCE_COMMIT when the sender sets it
echo "commit: $(git rev-parse HEAD 2>/dev/null || echo "unknown: not a git checkout${SELLER_SOURCE_COMMIT:+ (stated: $SELLER_SOURCE_COMMIT)}")"
case "${1:-}" in
  train) shift; exec "$PY" -m seller_dist.cli bench gpu "$@" ;;
  generate) shift; exec "$PY" -m seller_dist.cli bench gpu --generate "$@" ;;
esac
# the suite: its JSON path is printed first; the log goes next to it
LOG="$(mktemp)"
set +e
"$PY" -m seller_dist.cli bench gpu --suite "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
OUT="$(sed -n 's/^\[gpu-suite\] sections .* -> \(.*\)$/\1/p' "$LOG" | head -1)"
if [ -n "$OUT" ]; then cp "$LOG" "${OUT%.json}.log"; echo "[gpu-suite] log -> ${OUT%.json}.log"; fi
rm -f "$LOG"
exit "$rc"
