# syntax=docker/dockerfile:1
# inference: the Qwen-Image pipelines. Two targets from one file, built from the repository root:
#   docker build -f docker/inference.Dockerfile -t inkloop/inference:0.1.0 .                  # CUDA (default)
#   docker build -f docker/inference.Dockerfile --target cpu -t inkloop/inference:dev-cpu .   # CPU, dev overlay
# torch is installed first from the PyTorch index of the wanted build, at the pin of constraints.txt
# (2.13.0; `+cu128` / `+cpu` local versions satisfy `torch==2.13.0`), so `.[inference]` keeps it.
# The CUDA image needs an NVIDIA driver on the node that supports CUDA_VERSION (12.8: driver >= 570).
# Weights are never baked in: prod mounts them read-only at INKLOOP_INFERENCE_MODEL_PATH.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# ---- CPU: python slim with the CPU torch build -------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build
ARG TORCH_CPU_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY common common
COPY cli cli
COPY services services
RUN /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_CPU_INDEX}" torch==2.13.0 \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[inference]"

FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="inkloop-inference" \
      org.opencontainers.image.description="inkloop inference (CPU build): Qwen-Image pipelines"
RUN groupadd --system --gid 10001 inkloop \
    && useradd --system --uid 10001 --gid inkloop --home-dir /var/lib/inkloop --no-create-home inkloop \
    && mkdir -p /var/lib/inkloop \
    && chown inkloop:inkloop /var/lib/inkloop
COPY --from=cpu-build /opt/venv /opt/venv
COPY docker/grpc-health-check.py /opt/inkloop/grpc-health-check.py
# Offline by design: caches go to /tmp (an emptyDir under a read-only root filesystem).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/cache \
    INKLOOP_INFERENCE_HOST=0.0.0.0 \
    INKLOOP_INFERENCE_DATA_DIR=/var/lib/inkloop \
    INKLOOP_INFERENCE_DEVICE=cpu
WORKDIR /var/lib/inkloop
USER 10001:10001
# gRPC, metrics.
EXPOSE 50052 9092
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "/opt/inkloop/grpc-health-check.py", "--port-env", "INKLOOP_INFERENCE_PORT", "--default-port", "50052"]
ENTRYPOINT ["inkloop", "serve", "inference"]

# ---- CUDA: the NVIDIA runtime base (Ubuntu 24.04, Python 3.12) with the CUDA torch build -------
FROM ${CUDA_IMAGE} AS cuda-build
ARG TORCH_CUDA_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
# Ubuntu's archive moves its patch versions under a fixed base image: pinning them would break builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY common common
COPY cli cli
COPY services services
RUN /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_CUDA_INDEX}" torch==2.13.0 \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[inference]"

FROM ${CUDA_IMAGE} AS cuda
LABEL org.opencontainers.image.title="inkloop-inference" \
      org.opencontainers.image.description="inkloop inference (CUDA build): Qwen-Image pipelines"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inkloop \
    && useradd --system --uid 10001 --gid inkloop --home-dir /var/lib/inkloop --no-create-home inkloop \
    && mkdir -p /var/lib/inkloop \
    && chown inkloop:inkloop /var/lib/inkloop
COPY --from=cuda-build /opt/venv /opt/venv
COPY docker/grpc-health-check.py /opt/inkloop/grpc-health-check.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/cache \
    INKLOOP_INFERENCE_HOST=0.0.0.0 \
    INKLOOP_INFERENCE_DATA_DIR=/var/lib/inkloop \
    INKLOOP_INFERENCE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /var/lib/inkloop
USER 10001:10001
# gRPC, metrics.
EXPOSE 50052 9092
# Loading a 20B model takes minutes: failures do not count for the first 30.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python", "/opt/inkloop/grpc-health-check.py", "--port-env", "INKLOOP_INFERENCE_PORT", "--default-port", "50052"]
ENTRYPOINT ["inkloop", "serve", "inference"]
