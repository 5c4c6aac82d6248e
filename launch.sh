#!/usr/bin/env bash
# seller-dist launcher: installs the project into .venv when needed (idempotent), then runs a command.
#   ./launch.sh demo                 prepare the embedded synthetic dataset and run the pipeline end to end
#   ./launch.sh test                 the full test suite (what CI runs)
#   ./launch.sh test-fast            unit tests only (skips tests marked slow)
#   ./launch.sh setup                only install
#   ./launch.sh cli ARGS...          run `seller-dist ARGS...` inside the venv
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${SELLER_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
TORCH_VERSION="${SELLER_TORCH_VERSION:-2.13.0}"

export RAY_USAGE_STATS_ENABLED=0
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.cache/torch_extensions}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE="${WANDB_MODE:-offline}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() { sha256sum "$ROOT/pyproject.toml" | cut -c1-16; }

setup() {
  if [ ! -x "$PY" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && python3 -c "import torch" >/dev/null 2>&1; then
      echo "[launch] GPU host with torch: venv at $VENV sees the host's torch" >&2
      python3 -m venv --system-site-packages "$VENV"
    else
      echo "[launch] creating venv at $VENV" >&2
      python3 -m venv "$VENV"
    fi
  fi
  local stamp="$VENV/.seller-dist-installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(stamp_of)" ]; then
    return 0
  fi
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    # On this CPU machine pip finds the local CPU wheel; on a GPU host PyPI's build of the same version.
    echo "[launch] installing torch==$TORCH_VERSION first" >&2
    "$PY" -m pip install -q "torch==$TORCH_VERSION"
  fi
  echo "[launch] installing seller-dist and its dependencies" >&2
  "$PY" -m pip install -q -e "$ROOT[dev]"
  stamp_of > "$stamp"
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/seller-dist" demo "$@" ;;
  test) setup; exec "$PY" -m pytest -q tests "$@" ;;
  test-fast) setup; exec "$PY" -m pytest -q -m "not slow" tests "$@" ;;
  lint) setup; exec "$VENV/bin/ruff" check seller_dist data_prep tests ;;
  cli) setup; exec "$VENV/bin/seller-dist" "$@" ;;
  help|-h|--help) sed -n '2,8p' "$0" ;;
  *) echo "unknown command '$cmd'; see ./launch.sh help" >&2; exit 2 ;;
esac
