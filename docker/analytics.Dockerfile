# syntax=docker/dockerfile:1
# analytics: slim Python, no torch; talks to a ClickHouse server (chDB, the embedded
# engine, is a development convenience and not installed). Build from the repository root:
#   docker build -f docker/analytics.Dockerfile -t inkloop/analytics:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY common common
COPY cli cli
COPY services services
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="inkloop-analytics" \
      org.opencontainers.image.description="inkloop analytics: events into ClickHouse, product queries"
RUN groupadd --system --gid 10001 inkloop \
    && useradd --system --uid 10001 --gid inkloop --home-dir /var/lib/inkloop --no-create-home inkloop \
    && mkdir -p /var/lib/inkloop \
    && chown inkloop:inkloop /var/lib/inkloop
COPY --from=build /opt/venv /opt/venv
COPY docker/grpc-health-check.py /opt/inkloop/grpc-health-check.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INKLOOP_ANALYTICS_HOST=0.0.0.0 \
    INKLOOP_ANALYTICS_DATA_DIR=/var/lib/inkloop
WORKDIR /var/lib/inkloop
USER 10001:10001
# gRPC, metrics.
EXPOSE 50053 9093
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/inkloop/grpc-health-check.py", "--port-env", "INKLOOP_ANALYTICS_PORT", "--default-port", "50053"]
ENTRYPOINT ["inkloop", "serve", "analytics"]
