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

LINT_PATHS := workflows activities workers api common bench tests temporal-dev/banner.py

PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_ARGS ?=

# Workers and the API follow a non-default dev-server port unless told otherwise.
ifdef SAGAWORKS_TEMPORAL_PORT
export SAGAWORKS_TEMPORAL_ADDRESS ?= 127.0.0.1:$(SAGAWORKS_TEMPORAL_PORT)
endif

.PHONY: help bootstrap venv up seed test faults lint bench soak histories clean

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

up: venv ## Seed the catalogue, then run Temporal, workers, API and banner (Ctrl-C stops all)
	$(RUN) $(PY) -m activities.seed
	@# honcho exits 130/143 after Ctrl-C or SIGTERM has stopped every process: a clean stop.
	$(RUN) $(VENV)/bin/honcho start -f Procfile || { rc=$$?; [[ $$rc == 130 || $$rc == 143 ]] || exit $$rc; }

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

soak: venv ## 1,000 orders under random faults, then the invariants (SOAK_ARGS=... passes through)
	$(RUN) $(PY) -m bench.soak $(SOAK_ARGS)

histories: venv ## Re-record the saga histories the replay test guards (see README)
	$(RUN) $(PY) -m tests.histories.record

clean: ## Delete local state: the dev-server DB and the services' SQLite files
	rm -rf temporal-dev/data data
