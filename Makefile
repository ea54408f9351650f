# airflow-provider-retl: everything from a fresh clone with Python 3.11+ and make.
#   make test    all suites (bootstraps .venv on first use)
#   make demo    the demo DAG against the local emulators
#   make airflow airflow standalone with the example DAGs, emulators and connections (UI on :8080)
#   make ui-test the UI of `make airflow` in headless Chromium (installs chromium + playwright when missing)
#   make soak    the stateful model-based tests (tests/stateful) with the long hypothesis profile
#   make bench   benchmarks/run.py (BENCH_ARGS="--quick" or "--sizes 10k,100k,1m --scenarios 1,6")
#   make lock    re-resolve the dependencies and rewrite constraints.txt
#   make clean   remove .venv and everything generated

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.retl-installed
CONSTRAINTS := constraints.txt
EXTRAS := emulators,duckdb,postgres,sqlite,snowflake,mysql,examples,redis,celery
# Test and tooling packages that are not (yet) extras of the project.
DEV_PACKAGES := pytest pytest-xdist pytest-timeout hypothesis ruff mypy hubspot-api-client xxhash zenpy customerio mailchimp-marketing simple-salesforce fakesnow openapi-core

# Up to 4 workers: each one migrates its own Airflow DB and warms its own in-process API.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 4 ? 4 : n )))
PYTEST_ARGS ?=
CELERY_TESTS ?= 1
RESULTS := build/test-results
# dbt for the example project lives in its own venv: its pins (protobuf<7, pathspec<0.13) clash with Airflow's.
DBT_VENV := .venv-dbt
DBT_STAMP := $(DBT_VENV)/.retl-installed
DBT_CONSTRAINTS := constraints-dbt.txt

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export PIP_ROOT_USER_ACTION := ignore

.PHONY: test lint soak demo airflow ui-test bench lock clean .venv
.venv: $(STAMP)

# Rebuilt only when the project's metadata or the pins change.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python >= 3.11 is needed; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	bash scripts/ensure-build-deps.sh
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install -q -c $(CONSTRAINTS) --upgrade pip
	# setuptools too: packages built from source without isolation (mysqlclient) need a PEP 639-aware one.
	$(VENV_PY) -m pip install -q -c $(CONSTRAINTS) hatchling editables setuptools
	$(VENV_PY) -m pip install -q --no-build-isolation -c $(CONSTRAINTS) -e '.[$(EXTRAS)]' $(DEV_PACKAGES)
	touch $@

$(DBT_STAMP): $(DBT_CONSTRAINTS)
	test -x $(DBT_VENV)/bin/python || $(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/python -m pip install -q -c $(DBT_CONSTRAINTS) --upgrade pip
	$(DBT_VENV)/bin/python -m pip install -q -c $(DBT_CONSTRAINTS) 'dbt-core<1.12' dbt-duckdb
	touch $@

# pytest exits 5 when nothing was collected, so an empty run fails too.
# The CeleryExecutor cluster test (tests/distributed, marker `celery`, deselected unless -m names it) runs
# first in a pytest of its own: it starts ~8 Airflow processes and SIGKILLs a worker, timings that xdist
# neighbours on 2 cores would skew. Both runs always happen; make fails when either fails.
# CELERY_TESTS=0 leaves the cluster test out.
# The checks Airflow's providers run: ruff (lint and format) and mypy on the package, pinned in constraints.txt.
lint: $(STAMP)
	$(VENV_PY) -m ruff check airflow_provider_retl
	$(VENV_PY) -m ruff format --check airflow_provider_retl
	$(VENV_PY) -m mypy

test: $(STAMP) $(DBT_STAMP)
	mkdir -p $(RESULTS)
	status=0; \
	$(MAKE) --no-print-directory lint || status=$$?; \
	if [ "$(CELERY_TESTS)" != 0 ]; then \
		$(VENV_PY) -m pytest -m celery -ra --strict-markers --junitxml=$(RESULTS)/junit-celery.xml tests/distributed \
			|| status=$$?; \
	fi; \
	$(VENV_PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -ra --strict-markers --durations=15 \
		--junitxml=$(RESULTS)/junit.xml $(PYTEST_ARGS) || status=$$?; \
	exit $$status

# The stateful machines of tests/stateful with HYPOTHESIS_PROFILE=soak: 500 examples per
# configuration (SOAK_EXAMPLES), random seeds, longer histories. `make test` runs the same
# machines with the small derandomized "ci" profile.
SOAK_EXAMPLES ?= 500
soak: $(STAMP)
	mkdir -p $(RESULTS)
	HYPOTHESIS_PROFILE=soak RETL_STATEFUL_EXAMPLES=$(SOAK_EXAMPLES) CI=$${CI:-true} $(VENV_PY) -m pytest -ra \
		--strict-markers -p no:logging --junitxml=$(RESULTS)/junit-soak.xml tests/stateful $(PYTEST_ARGS)

demo: $(STAMP) $(DBT_STAMP)
	$(VENV_PY) demo/run.py

airflow: $(STAMP) $(DBT_STAMP)
	$(VENV_PY) demo/airflow_standalone.py

# Opt-in (tests marked `ui` are deselected otherwise): Debian's chromium is the browser, playwright drives it.
ui-test: $(STAMP) $(DBT_STAMP)
	command -v chromium >/dev/null || test -x "$${RETL_CHROMIUM:-}" || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
		|| { echo "ui-test needs Chromium: apt-get install chromium (as root), or set RETL_CHROMIUM" >&2; exit 1; }
	$(VENV_PY) -c 'import playwright' 2>/dev/null || $(VENV_PY) -m pip install -q -c $(CONSTRAINTS) playwright
	mkdir -p $(RESULTS)
	$(VENV_PY) -m pytest -m ui -ra -s --strict-markers --junitxml=$(RESULTS)/junit-ui.xml $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV_PY) benchmarks/run.py $(BENCH_ARGS)

# Resolve from scratch in a throwaway venv (newest versions the pyproject allows), then pin.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install -q --upgrade pip hatchling editables setuptools
	build/lock-venv/bin/python -m pip install -q --no-build-isolation -e '.[$(EXTRAS)]' $(DEV_PACKAGES)
	{ echo "# Pinned by 'make lock' on $$(date -u +%Y-%m-%d) with $$(build/lock-venv/bin/python -V)."; \
	  echo "# Install with: pip install -c constraints.txt -e '.[$(EXTRAS)]' $(DEV_PACKAGES)"; \
	  build/lock-venv/bin/python -m pip freeze --all --exclude-editable \
		| grep -viE '^(airflow-provider-retl|wheel)([=@ ]|$$)'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf build/lock-venv
	@echo "constraints.txt rewritten; the next make target reinstalls .venv"

clean:
	rm -rf $(VENV) $(DBT_VENV) build dist .pytest_cache .demo .airflow *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
