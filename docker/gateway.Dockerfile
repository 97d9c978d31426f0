# syntax=docker/dockerfile:1
# The gateway: slim Python with the CPU torch its semantic safety layer runs on (the production
# overlay turns it on). Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t inkloop/gateway:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
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
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[safety-semantic]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="inkloop-gateway" \
      org.opencontainers.image.description="inkloop gateway: API keys, rate limits, jobs, web page"
RUN groupadd --system --gid 10001 inkloop \
    && useradd --system --uid 10001 --gid inkloop --home-dir /var/lib/inkloop --no-create-home inkloop \
    && mkdir -p /var/lib/inkloop \
    && chown inkloop:inkloop /var/lib/inkloop
COPY --from=build /opt/venv /opt/venv
COPY docker/grpc-health-check.py /opt/inkloop/grpc-health-check.py
# The shipped safety lexicon at a fixed path, so INKLOOP_GATEWAY_SAFETY_LEXICON_PATHS can extend it.
COPY services/gateway/inkloop_gateway/admission/lexicon/default.toml /etc/inkloop/lexicon/default.toml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INKLOOP_GATEWAY_HOST=0.0.0.0 \
    INKLOOP_GATEWAY_DATA_DIR=/var/lib/inkloop
WORKDIR /var/lib/inkloop
USER 10001:10001
# gRPC, HTTP, metrics.
EXPOSE 50051 8080 9091
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/inkloop/grpc-health-check.py", "--port-env", "INKLOOP_GATEWAY_PORT", "--default-port", "50051"]
ENTRYPOINT ["inkloop", "serve", "gateway"]
