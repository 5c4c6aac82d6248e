#!/usr/bin/env bash
# One-GPU training benchmark (BENCHMARKS.md, "Training on a GPU"): builds a frozen 0.95B Llama-style
# LLM from a config (random weights, no hub), checks CUDA against CPU, trains the SELLER adapter on it
# in bf16 on synthetic batches at sequence length 1024 (eager, full_logits and torch.compile variants),
# prints tokens/s and MFU (4N frozen + 6N trainable) per micro-batch size. About 3 minutes on an H200
# with --seconds 15 (54.6 % MFU with compile there); the default is 20 s per row.
#   cluster/gpu_bench.sh                         # H200 peak for MFU; --chip h100 for an H100
#   cluster/gpu_bench.sh --tiny                  # CPU smoke test of the same code, seconds
#   cluster/gpu_bench.sh --out gpu-bench.json --micro-batches 32,64 --variants eager,compile
# Installs nothing beyond `./launch.sh setup` (which reuses the host's CUDA torch on a GPU machine).
# On a closed GPU machine whose python already has torch + transformers (no package index to set up
# a venv from): SELLER_PYTHON=python3 cluster/gpu_bench.sh  (skips the setup; how the H200 run ran).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${SELLER_PYTHON:-}" ]; then ./launch.sh setup; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
git rev-parse HEAD 2>/dev/null || true
exec "${SELLER_PYTHON:-${SELLER_VENV:-$ROOT/.venv}/bin/python}" -m seller_dist.bench.gpu "$@"
