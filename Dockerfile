# The image the KubeRay manifests in cluster/ run: Ray's own GPU image at the Ray version that
# pyproject.toml pins, with seller-dist installed. Build it with `./launch.sh image [REF]`, which passes
# TORCH_VERSION (launch.sh's pin) and the git commit; cluster/README.md walks from here to a job.
# tests/unit/test_deploy_image.py checks that this file, pyproject.toml and the manifests agree.
#
# Base: rayproject/ray's `-gpu` tag (a CUDA devel image: g++ and nvcc) of Ray 2.60.0 on Python 3.11,
# the Python the project's venv and CI use. Its user `ray` (uid 1000, gid 100) owns the conda Python
# in /home/ray/anaconda3, so every install below runs without root.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}
ARG RAY_IMAGE

# torch is the one dependency that pyproject.toml leaves as a range (launch.sh installs the CPU or the
# CUDA build first): its version comes from launch.sh, the only place it is pinned. The default index
# (PyPI) serves the CUDA build, which brings its own CUDA runtime; the GPU nodes need a driver for that
# CUDA (torch 2.13.0 on PyPI is built for CUDA 13.0: driver R580 or newer). For an older driver, build
# against PyTorch's index for another CUDA: cluster/README.md, "The image".
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=
ARG GIT_COMMIT=unknown

# Non-root, with no way back to root: Ray's image gives `ray` password-less sudo, this one takes it
# away; and the user is numeric so that Kubernetes' runAsNonRoot can verify it.
USER root
RUN sed -i '/^ray ALL=NOPASSWD: ALL$/d' /etc/sudoers \
    && (gpasswd -d ray sudo || true) \
    && install -d -o 1000 -g 100 /app
USER 1000:100
WORKDIR /app

# DeepSpeed's JIT ops: built on first use into a cache the user owns, never at image build time.
# - GPU workers load none: the NCCL backend and torch's AdamW as the client optimizer, also under
#   ZeRO-3 CPU offload (seller_dist/train/strategy.py), so there is nothing to prebuild.
# - CPU workers (DS_ACCELERATOR=cpu) build DeepSpeed's shared-memory comm op at init_distributed, with
#   -march=native: built here it would carry the build machine's CPU features to every node; built on
#   the node it fits that node (tens of seconds, once per pod; mount a volume here to keep it).
# - train.deepcompile=true builds DeepCompile's CUDA op with this image's nvcc, whose CUDA major must
#   equal torch's (cluster/README.md, "The image").
ENV TORCH_EXTENSIONS_DIR=/home/ray/.cache/torch_extensions \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    WANDB_MODE=offline \
    RAY_USAGE_STATS_ENABLED=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN test -n "${TORCH_VERSION}" \
        || { echo "TORCH_VERSION is not set: build with ./launch.sh image (it passes launch.sh's pin)" >&2; exit 1; } \
    && echo "torch==${TORCH_VERSION}" > /home/ray/torch-constraint.txt \
    && pip install ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"} "torch==${TORCH_VERSION}" \
    && mkdir -p "${TORCH_EXTENSIONS_DIR}"

# The dependencies exactly as pyproject.toml lists them (read from the file, not copied here), in a
# layer that a code change does not rebuild; the constraint keeps pip from replacing the torch above,
# and DS_BUILD_OPS=0 keeps DeepSpeed's install from compiling any op.
COPY --chown=1000:100 pyproject.toml /app/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /home/ray/requirements.txt \
    && DS_BUILD_OPS=0 pip install -c /home/ray/torch-constraint.txt -r /home/ray/requirements.txt

COPY --chown=1000:100 README.md /app/README.md
COPY --chown=1000:100 seller_dist /app/seller_dist
COPY --chown=1000:100 data_prep /app/data_prep
COPY --chown=1000:100 configs /app/configs
COPY --chown=1000:100 cluster/check_pins.py /app/cluster/check_pins.py
# The installed project's requirements must all hold (a base image package at another version fails
# the build here, not a job on the cluster), and the CLI must import.
RUN pip install --no-deps -c /home/ray/torch-constraint.txt /app \
    && rm -rf /app/build /app/*.egg-info \
    && python /app/cluster/check_pins.py --torch "${TORCH_VERSION}" \
    && python -m seller_dist.cli --version

LABEL org.opencontainers.image.title="seller-dist" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.base.name="${RAY_IMAGE}"
