# One image for every part of Aurora MLOps: the KFP pipeline components, the KServe predictor,
# the retrain trigger and the `auroraops` CLI. Manifests and pipeline specs set the command;
# run bare, the image prints the CLI help.
#
#   make image                                   CUDA runtime base, for GPU node pools
#   make image BASE_IMAGE=ubuntu:24.04 TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                                                CPU-only image with the CPU build of torch
#   docker run --rm aurora-mlops:dev demo
#
# Stages: `base` (the chosen base + CA certificates), `build` (a standalone CPython 3.11 and a
# virtual environment installed from requirements.lock) and the final stage, which copies only
# /opt/python and /opt/venv from `build`: no compilers, no uv, no pip caches, no apt lists.

# The default is NVIDIA's CUDA *runtime* image (not devel: nothing is compiled here), CUDA 13.0
# like the nvidia-* wheels torch 2.14.1 brings with it. Any glibc-based image with apt can stand
# in, e.g. ubuntu:24.04 for CPU nodes. Both stages use it, so the Python built in one runs in
# the other against the same glibc.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

# uv fetches the standalone CPython 3.11 (the base images ship none, or not 3.11). The pinned uv
# release fixes the Python patch version and verifies the download's checksum.
FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM ${BASE_IMAGE} AS base
ARG DEBIAN_FRONTEND=noninteractive
# CA certificates: pip in the build stage and the S3, MLflow and Kubernetes clients at run time
# verify TLS against the system store. The CUDA images have them already, ubuntu:24.04 does not.
# DL3008 (pin apt versions) is ignored: the base is a build argument, so the Ubuntu release, and
# with it the available package version, varies; the package comes from that release's archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM base AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed
RUN uv python install 3.11 \
    && "$(uv python find 3.11)" -m venv /opt/venv

WORKDIR /src
# Empty: torch==2.14.1 comes from PyPI, a CUDA build. For a CPU image pass
# https://download.pytorch.org/whl/cpu: pip then also looks there, and the same pins
# (torch==2.14.1, torchvision==0.29.1) resolve to the smaller +cpu wheels, without CUDA wheels.
ARG TORCH_INDEX_URL=""

# requirements.lock holds the exact version of every package; it is applied as constraints (-c),
# so every package installed is at its locked version and only what the project needs at run
# time is installed (not the test tools the lock also pins). Dependencies first, from
# pyproject.toml and the lock alone, so that editing the code does not reinstall them.
COPY requirements.lock pyproject.toml ./
RUN /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/dependencies.txt \
    && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        ${TORCH_INDEX_URL:+"--extra-index-url=${TORCH_INDEX_URL}"} \
        -c requirements.lock -r /tmp/dependencies.txt

# Then the project itself, non-editable, under the same constraints (everything above is
# already satisfied, so this installs aurora-mlops alone), and a consistency check.
COPY README.md ./
COPY model_code/ model_code/
COPY auroraops/ auroraops/
COPY adapters/ adapters/
COPY pipelines/ pipelines/
COPY components/ components/
COPY serving/ serving/
COPY monitoring/ monitoring/
RUN /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        ${TORCH_INDEX_URL:+"--extra-index-url=${TORCH_INDEX_URL}"} \
        -c requirements.lock . \
    && /opt/venv/bin/python -m pip check

FROM base
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="aurora-mlops" \
      org.opencontainers.image.description="Aurora weather models: KFP components, KServe predictor and the auroraops CLI" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}"

# A fixed numeric UID/GID, so that runAsNonRoot in pod security contexts can verify it.
RUN groupadd --gid 10001 aurora \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/aurora \
        --shell /usr/sbin/nologin aurora

COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
# The real sample files (8.5 MB; the corrupt ones are left out by .dockerignore), read-only,
# for `auroraops demo` in a pod; AURORAOPS_SAMPLES tells the demo where they are.
COPY data/samples/ /app/data/samples/

ENV PATH=/opt/venv/bin:$PATH \
    AURORAOPS_SAMPLES=/app/data/samples \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
# Writable by the user: relative output paths (e.g. the demo's outputs/demo) land here.
WORKDIR /home/aurora
ENTRYPOINT ["auroraops"]
CMD ["--help"]
