#!/usr/bin/env bash
# One-GPU training benchmark (BENCHMARKS.md, "Training on a GPU"): builds a frozen ~1.1B Llama-style
# LLM from a config (random weights, no hub), trains the SELLER adapter on it in bf16 on synthetic
# batches at sequence length 1024, prints tokens/s and MFU (4N frozen + 6N trainable) per micro-batch
# size. About 5-8 minutes on an H100/H200 with the defaults (3 micro-batch sizes x 60 s + build).
#   cluster/gpu_bench.sh                         # H200 peak for MFU; --chip h100 for an H100
#   cluster/gpu_bench.sh --tiny                  # CPU smoke test of the same code, seconds
#   cluster/gpu_bench.sh --out gpu-bench.json --micro-batches 16,32 --seconds 45
# Installs nothing beyond `./launch.sh setup` (which reuses the host's CUDA torch on a GPU machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./launch.sh setup
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
git rev-parse HEAD 2>/dev/null || true
exec "${SELLER_VENV:-$ROOT/.venv}/bin/python" -m seller_dist.bench.gpu "$@"
