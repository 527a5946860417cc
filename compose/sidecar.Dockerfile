# syntax=docker/dockerfile:1
# The llm-pipeline sidecar, built from the repository root:
#   docker build -f compose/sidecar.Dockerfile -t llm-otel-pipeline/sidecar:local .
# (compose/docker-compose.yml does this with context `..`.)

# The native helpers (native/: the OTLP/gRPC transport, wire readers, redaction prefilter) as
# an abi3 wheel: the sidecar runs without them, only slower (README, performance).
FROM rust:1.95.0-slim-bookworm AS native
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install "maturin>=1.7,<2"
WORKDIR /src
COPY native ./native
RUN /opt/maturin/bin/maturin build --release --manifest-path native/Cargo.toml \
      --compatibility linux --interpreter python3 --out /wheels

FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY --from=native /wheels /wheels
RUN python -m venv /opt/llm-pipeline \
 && /opt/llm-pipeline/bin/pip install --upgrade pip \
 && /opt/llm-pipeline/bin/pip install ".[demo]" /wheels/*.whl

FROM python:3.12.12-slim-bookworm
ENV PATH=/opt/llm-pipeline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/llm-pipeline /opt/llm-pipeline
RUN groupadd --system --gid 10001 llm \
 && useradd --system --uid 10001 --gid llm --home-dir /nonexistent --shell /usr/sbin/nologin llm \
 && mkdir -p /etc/llm-pipeline
USER 10001:10001
# 4317 OTLP gRPC, 4318 OTLP HTTP, 9464 /metrics
EXPOSE 4317 4318 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=6 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/health', timeout=3)"]
ENTRYPOINT []
CMD ["llm-pipeline", "run", "--config", "/etc/llm-pipeline/config.yaml"]
