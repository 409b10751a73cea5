# imflow: `make run` starts everything on a fresh machine, `make test-all` runs every test
# on both topologies. They install what they need (apt packages, .venv, jars from Maven
# Central) on first use. IMFLOW_TOPOLOGY=cluster selects the cluster topology (3 Kafka
# brokers, a Redis Cluster, pre-split history) for services, run, test and bench.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: install services init run test test-all test-faults test-read-fanout lint unit stop status bench bench-overload soak

install:  ## apt packages, the .venv and the Kafka/HBase jars (idempotent)
	bash scripts/install.sh

services: ## install, then start Redis, Kafka and HBase in the background
	bash scripts/services.sh start

.env:     ## a random development JWT secret, read by every imflow process
	@umask 077; echo "IMFLOW_SECRET=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')" > .env
	@echo "wrote .env with a new IMFLOW_SECRET"

init: .env ## create the Kafka topics and the HBase table (idempotent; services must run)
	$(BIN)/imflow init

run: services init ## everything: services, then web + every agent (Procfile) until Ctrl-C; the demo chat page at /
	IMFLOW_DEMO=$${IMFLOW_DEMO:-1} $(BIN)/honcho start -f Procfile -p $${PORT:-8080}

lint:     ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: install ## the fast unit tests only (no services)
	$(BIN)/pytest -m "not services" tests/unit

test: services lint ## every test against the real Kafka, HBase and Redis, faults last
	$(BIN)/pytest tests --ignore=tests/faults
	$(MAKE) --no-print-directory test-read-fanout
	$(MAKE) --no-print-directory test-faults

test-all: ## `make test` on the single topology, then on the cluster topology (CI runs this)
	$(MAKE) --no-print-directory test
	bash scripts/services.sh stop redis kafka  # the single topology's: CPU for the cluster's
	IMFLOW_TOPOLOGY=cluster $(MAKE) --no-print-directory test

test-read-fanout: services ## tests/e2e again with every group of 3+ members on read fan-out
	IMFLOW_TEST_READ_FANOUT_THRESHOLD=2 $(BIN)/pytest tests/e2e

test-faults: services ## kills agents, web, Kafka, HBase under load; prints FAULT-REPORT lines
	$(BIN)/pytest tests/faults -rfEP

soak: services ## the sequencer's full-window test with 5 million messages (~20 min)
	IMFLOW_TEST_WINDOW_MESSAGES=$${IMFLOW_TEST_WINDOW_MESSAGES:-5000000} \
	  $(BIN)/pytest tests/faults/test_sequencer_window.py -rfEP --timeout=3600

bench: services ## the benchmarks (bench/run.py); writes bench/results/latest.json
	$(BIN)/python -m bench.run

bench-overload: services ## one web at 1,000 and 2,000 msg/s from vegeta, open loop (~5 min; needs Go)
	$(BIN)/python -m bench.overload

stop:     ## stop the services this project started (both topologies)
	bash scripts/services.sh stop
	IMFLOW_TOPOLOGY=cluster bash scripts/services.sh stop redis kafka

status:
	bash scripts/services.sh status
