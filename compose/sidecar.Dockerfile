# syntax=docker/dockerfile:1
# The llm-pipeline sidecar, built from the repository root:
#   docker build -f compose/sidecar.Dockerfile -t llm-otel-pipeline/sidecar:local .
# (compose/docker-compose.yml does this with context `..`.)

FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN python -m venv /opt/llm-pipeline \
 && /opt/llm-pipeline/bin/pip install --upgrade pip \
 && /opt/llm-pipeline/bin/pip install .

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
