# sagaworks developer entry points. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --no-print-directory

# uv from PATH if there is one, else a private copy in .tools (git-ignored).
# Override with `make UV=/path/to/uv ...`.
ifeq ($(origin UV),undefined)
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
endif
PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Marks the last successful sync, so the venv is rebuilt whenever the lock or pyproject move.
SYNCED := $(VENV)/.synced
# Tools started from the venv (temporal, temporal-test-server) find each other on PATH.
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONUNBUFFERED=1

LINT_PATHS := workflows activities workers api common bench tests tooling observability migrations temporal-dev/banner.py

PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_ARGS ?=
# Where `make observe` serves Prometheus.
PROMETHEUS_LISTEN ?= 127.0.0.1:9090

# How many processes `make up` runs of each worker and of the API (README, "Scaling out"):
# honcho's concurrency for every worker line of the Procfile; uvicorn's --workers (which it
# reads from WEB_CONCURRENCY) for the API, whose processes share its one port.
SAGAWORKS_WORKER_PROCESSES ?= 1
SAGAWORKS_API_PROCESSES ?= 1
WORKER_ROLES := $(shell sed -nE 's/^([a-z]+): .* -m workers\..*/\1/p' Procfile)
comma := ,
empty :=
space := $(empty) $(empty)
CONCURRENCY := $(subst $(space),$(comma),$(foreach role,$(WORKER_ROLES),$(role)=$(SAGAWORKS_WORKER_PROCESSES)))

# Workers and the API follow a non-default dev-server port unless told otherwise.
ifdef SAGAWORKS_TEMPORAL_PORT
export SAGAWORKS_TEMPORAL_ADDRESS ?= 127.0.0.1:$(SAGAWORKS_TEMPORAL_PORT)
endif

ROLE ?= customer
CUSTOMER_ID ?=
NAME ?=

.PHONY: help bootstrap venv up migrate key seed test faults lint bench bench-curve soak observe histories clean

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

bootstrap: | $(UV) ## Make sure uv is available (PATH, else .tools/)
	@echo "uv: $(UV) ($$($(UV) --version))"

.tools/bin/uv:
	$(PYTHON3) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

venv: $(SYNCED) ## Create or update .venv from uv.lock

$(SYNCED): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	@touch $@

up: venv ## Migrate and seed, then run Temporal, workers, API and banner (Ctrl-C stops all)
	$(RUN) $(PY) -m common.migrate
	$(RUN) $(PY) -m activities.seed
	$(RUN) $(PY) -m api.demo_keys
	@# Before any process starts, so they never race to create different keys.
	$(RUN) $(PY) -m common.codec_keys ensure
	@[[ $(SAGAWORKS_API_PROCESSES) == 1 || -n "$${SAGAWORKS_RATE_LIMIT_STORAGE_URL:-}" ]] || echo \
		"note: each API process counts rate limits alone; SAGAWORKS_RATE_LIMIT_STORAGE_URL=redis://... shares them"
	@# honcho exits 130/143 after Ctrl-C or SIGTERM has stopped every process: a clean stop.
	$(RUN) WEB_CONCURRENCY=$(SAGAWORKS_API_PROCESSES) $(VENV)/bin/honcho start -f Procfile -c $(CONCURRENCY) \
		|| { rc=$$?; [[ $$rc == 130 || $$rc == 143 ]] || exit $$rc; }

migrate: venv ## Bring every service database and the gateway's to its migration head
	$(RUN) $(PY) -m common.migrate

codec-rotate: venv ## Add a new payload-encryption key and make it active (then restart make up)
	$(RUN) $(PY) -m common.codec_keys rotate

key: venv ## Issue an API key: make key ROLE=customer CUSTOMER_ID=c-7, or ROLE=operator NAME=alice
	@$(RUN) $(PY) -m api.keys create --role "$(ROLE)" \
		$(if $(CUSTOMER_ID),--customer-id "$(CUSTOMER_ID)") $(if $(NAME),--name "$(NAME)")

seed: venv ## Seed the demo catalogue (idempotent)
	$(RUN) $(PY) -m activities.seed

test: venv ## Run the whole test suite (PYTEST_ARGS=... passes through)
	$(RUN) $(VENV)/bin/pytest -q $(PYTEST_ARGS)

faults: venv ## Run only the fault suite: kills, restarts, outages on the real stack
	$(RUN) $(VENV)/bin/pytest -q -m faults tests/faults $(PYTEST_ARGS)

lint: venv ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

bench: venv ## Run the benchmark (BENCH_ARGS=... passes through)
	$(RUN) $(PY) -m bench.run $(BENCH_ARGS)

bench-curve: venv ## Throughput and p99 at concurrency 1, 10, 50, 100 (BENCH_ARGS=... passes through)
	$(RUN) $(PY) -m bench.run --curve $(BENCH_ARGS)

soak: venv ## 1,000 orders under random faults, then the invariants (SOAK_ARGS=... passes through)
	$(RUN) $(PY) -m bench.soak $(SOAK_ARGS)

bench-coordinator: venv ## 100 reporters into the sharded coordinator: signals/s per workflow, lag (BENCH_ARGS=...)
	$(RUN) nice -n 10 $(PY) -m bench.coordinator_bench $(BENCH_ARGS)

observe: venv ## Prometheus (Debian's package) with the shipped scrape config and alert rules over make up
	$(RUN) PROMETHEUS_LISTEN="$(PROMETHEUS_LISTEN)" $(PY) -m observability.observe

histories: venv ## Re-record the saga histories the replay test guards (see README)
	$(RUN) $(PY) -m tests.histories.record

clean: ## Delete local state: the dev-server DB and the services' SQLite files
	rm -rf temporal-dev/data data
