# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint browser-deps promtool-deps browser sdk unit integration install broker-start broker-stop clickhouse-start clickhouse-stop faults bench bench-queries bench-live bench-throughput simulate clean screenshots

# vidpulse up: a ClickHouse server on ./data/clickhouse, then the API and dashboard on :8080, the tracker (beacons,
# the SDK) on :8081 and the worker's metrics on :8082, each its own process; VIDPULSE_UP_PROCESSES=one runs
# them all in one process on chdb, beacons and queries both on :8080.
run: $(STAMP)
	$(BIN)/vidpulse up

test: lint browser-deps promtool-deps
	$(BIN)/python -m pytest -q --ignore=tests/faults

# The fault suite: the split topology on a ClickHouse server and a three-broker cluster, a part failing under
# load in each case (.ci/run runs it after make test). VIDPULSE_FAULT_KAFKA=single runs it on one broker.
faults: $(STAMP)
	$(BIN)/python -m pytest -q tests/faults

# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work here)
# and make their test video with ffmpeg.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser-deps:
	@test -x /usr/bin/chromium && command -v ffmpeg >/dev/null || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium ffmpeg)

# tests/unit/test_deploy_configs.py checks the Prometheus config and alert rules with promtool.
promtool-deps:
	@command -v promtool >/dev/null || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus)

browser: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q tests/browser

sdk: $(STAMP)
	$(BIN)/python -m ingest.sdk.build

lint: $(STAMP)
	$(BIN)/ruff check ingest aggregations queries vidpulse tests bench

unit: $(STAMP) promtool-deps
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

install: $(STAMP)

# The dashboard's front-end dependency (uPlot) comes from npm and is served by the API itself (no CDN).
# Livepeer's SDK, which the tests drive unmodified, pins pydantic and httpx versions of its own: it gets
# a virtual environment of its own under .cache/.
LIVEPEER_VENV := .cache/livepeer-0.3.0
# openapi-python-client generates a client from /openapi.json in a test; it and its output run apart too.
OPENAPI_CLIENT_VENV := .cache/openapi-python-client-0.29.1
$(STAMP): pyproject.toml queries/dashboard/package-lock.json Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	npm ci --prefix queries/dashboard --no-audit --no-fund --loglevel=error
	$(PYTHON) -m venv $(LIVEPEER_VENV)
	$(LIVEPEER_VENV)/bin/pip install --quiet livepeer==0.3.0
	$(PYTHON) -m venv $(OPENAPI_CLIENT_VENV)
	$(OPENAPI_CLIENT_VENV)/bin/pip install --quiet openapi-python-client==0.29.1
	bash deploy/kafka/kafka.sh fetch
	touch $(STAMP)

broker-start:
	bash deploy/kafka/kafka.sh start

broker-stop:
	bash deploy/kafka/kafka.sh stop

# A local ClickHouse server from chdb-core's engine (needs VIDPULSE_CLICKHOUSE_PASSWORD); see deploy/README.md.
clickhouse-start: $(STAMP)
	bash deploy/clickhouse/clickhouse.sh start

clickhouse-stop:
	bash deploy/clickhouse/clickhouse.sh stop

bench: $(STAMP)
	$(BIN)/python bench/freshness.py

bench-queries: $(STAMP)
	$(BIN)/python bench/query_latency.py

bench-live: $(STAMP)
	$(BIN)/python bench/live.py

# The tracker and the worker against raw baselines (bench/README.md). wrk (Debian) drives the HTTP load;
# py-spy (the bench extra) profiles with --profile: `make bench-throughput ARGS=--profile`.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench-throughput: $(BENCH_STAMP)
	@command -v wrk >/dev/null || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk)
	$(BIN)/python bench/throughput.py $(ARGS)

# The dashboard's pictures in docs/ (shown in the README), taken by its browser tests in Chromium.
screenshots: $(STAMP) browser-deps
	VIDPULSE_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/browser/test_dashboard.py

clean:
	bash deploy/kafka/kafka.sh stop || true
	bash deploy/clickhouse/clickhouse.sh stop || true
	rm -rf $(VENV) .cache data queries/dashboard/node_modules

# Realistic traffic against a running `VIDPULSE_TRUSTED_PROXIES=127.0.0.1 make run` (to its tracker, :8081).
simulate: $(STAMP)
	$(BIN)/vidpulse simulate --account demo --truth truth.json
