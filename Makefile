# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint unit integration install broker-start broker-stop bench simulate clean

run: $(STAMP)
	$(BIN)/vidpulse up

test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ingest aggregations queries vidpulse tests bench

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	bash deploy/kafka/kafka.sh fetch
	touch $(STAMP)

broker-start:
	bash deploy/kafka/kafka.sh start

broker-stop:
	bash deploy/kafka/kafka.sh stop

bench: $(STAMP)
	$(BIN)/python bench/freshness.py

clean:
	bash deploy/kafka/kafka.sh stop || true
	rm -rf $(VENV) .cache data

# Realistic traffic against a running `VIDPULSE_TRUSTED_PROXIES=127.0.0.1 make run`.
simulate: $(STAMP)
	$(BIN)/vidpulse simulate --account demo --truth truth.json
