# syntax=docker/dockerfile:1
# vidpulse: one image for every process kind. The command picks the kind:
#   docker run IMAGE up|tracker|worker|api|migrate|simulate
# See deploy/README.md and docker-compose.yml for the distributed stack.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- dashboard: its one front-end dependency (uPlot) from npm, pinned by package-lock.json.
FROM node:20-slim AS dashboard
WORKDIR /dashboard
COPY queries/dashboard/package.json queries/dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# ---- build: install the project into a virtualenv that the runtime stage copies.
FROM ${PYTHON_IMAGE} AS build

# A C compiler lets faust-streaming (published as an sdist only) build its
# Cython speed-ups; without one it falls back to pure Python. Build stage only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/vidpulse && /opt/vidpulse/bin/pip install --upgrade pip
ENV PATH=/opt/vidpulse/bin:$PATH

WORKDIR /src
# Dependencies first (read from pyproject.toml), so a source-only change reuses
# this layer instead of downloading chdb, pyarrow and friends again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# Then the project itself (.dockerignore keeps caches, venvs, data and tests out).
COPY . .
COPY --from=dashboard /dashboard/node_modules/uplot/dist queries/dashboard/node_modules/uplot/dist
RUN pip install --no-deps . \
    && vidpulse --help >/dev/null

# ---- runtime
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="vidpulse" \
      org.opencontainers.image.description="Player analytics: tracker, Faust worker and query API" \
      org.opencontainers.image.licenses="Apache-2.0"

ARG UID=10001
RUN groupadd --system --gid ${UID} vidpulse \
    && useradd --system --uid ${UID} --gid vidpulse --home-dir /var/lib/vidpulse --create-home \
        --shell /usr/sbin/nologin vidpulse

COPY --from=build /opt/vidpulse /opt/vidpulse

ENV PATH=/opt/vidpulse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIDPULSE_HTTP_HOST=0.0.0.0 \
    VIDPULSE_HTTP_PORT=8080 \
    VIDPULSE_DATA_DIR=/var/lib/vidpulse \
    VIDPULSE_CLICKHOUSE_URL=chdb:///var/lib/vidpulse/clickhouse \
    VIDPULSE_UP_PROCESSES=one

# `up` in a container is the one process (VIDPULSE_UP_PROCESSES=one): the container runtime is its
# supervisor, and the split form is docker-compose.yml's separate services, one part each.
# Writable state: Faust's data dir, and the embedded chdb database that `up`
# uses unless VIDPULSE_CLICKHOUSE_URL points at a server. Mount a volume here
# to keep it (no VOLUME line: scaled workers would each leave an anonymous one).
WORKDIR /var/lib/vidpulse
USER vidpulse

EXPOSE 8080

# /readyz: 200 once this process's broker and database answer, 503 otherwise
# (urlopen raises on 503, so the exit code is non-zero). No curl in slim images.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('VIDPULSE_HTTP_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["vidpulse"]
# `up` needs VIDPULSE_KAFKA_BOOTSTRAP in this image: the local-broker script
# (deploy/kafka/kafka.sh, Java + Maven) is not part of it.
CMD ["up"]
