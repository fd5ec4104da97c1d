# Calabi Registry — developer and CI entry points.
#
#   make demo    bootstrap .venv and run the demo story
#   make test    bootstrap .venv + system packages, then ruff, mypy and pytest
#
# Both work on a fresh Debian machine with only python3 (>= 3.11), gcc and make.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed
PIP_FLAGS ?= --quiet --disable-pip-version-check
# Some machines' pip config names local index folders that do not all exist; pip
# warns once per package about them. Drop that noise, keep everything else.
PIP_NOISE := is ignored: it is neither a file nor a directory
APT_GET ?= apt-get
PG_BIN_GLOB ?= /usr/lib/postgresql/*/bin
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Most of the suite's time is spent waiting on real servers, workers and
# Temporal timeouts, so two processes on two cores take about half the time of one. `--dist loadfile`
# keeps each module in one process (its module-scoped servers); session fixtures start once per process.
# PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
# What we ship and type-check: the one list in pyproject.toml (the wheel's only-include).
PACKAGES = $(shell $(PYTHON) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["hatch"]["build"]["targets"]["wheel"]["only-include"]))')

# Debian packages that `system-deps` installs, when missing, on top of PostgreSQL
# (PostgreSQL itself is detected by its binaries, see below). The browser tests
# (tests/browser) drive Debian's chromium through Playwright, never a downloaded browser;
# bubblewrap is the sandbox a candidate's code runs in (activities/sandbox.py).
EXTRA_DEB_PACKAGES ?= chromium bubblewrap

# `apt-get install` as root, through sudo when not root, or fail with a hint.
define apt_install
if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
else echo "error: need root (or sudo) to install Debian packages: $(1)" >&2; exit 1; fi; \
echo ">> apt-get install $(1)"; \
$$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq; \
$$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq --no-install-recommends $(1) </dev/null
endef

# Exit status 0 when initdb and pg_ctl are on PATH or in /usr/lib/postgresql/*/bin
# (Debian's packages put the server binaries there, not on PATH).
define have_postgres
{ command -v initdb && command -v pg_ctl; } >/dev/null 2>&1 || \
{ for d in $(PG_BIN_GLOB); do [ -x "$$d/initdb" ] && [ -x "$$d/pg_ctl" ] && exit 0; done; exit 1; }
endef

.PHONY: help venv .venv system-deps test lint fmt demo bench bench-engine bench-scale clean distclean

help:
	@echo "make demo         run the demo (examples/demo.py)"
	@echo "make test         ruff + mypy + pytest (installs what is missing)"
	@echo "make lint         ruff + mypy only"
	@echo "make fmt          ruff format + ruff check --fix"
	@echo "make bench        run the benchmarks: registry vs MLflow, the promotion engine, scale (python -m bench)"
	@echo "make bench-engine run only the promotion-engine benchmark (python -m bench --engine-only)"
	@echo "make bench-scale  run only the scale benchmark: PostgreSQL, 1,000 models x 100 versions (--scale-only)"
	@echo "make system-deps  install Debian packages the tests need (PostgreSQL)"
	@echo "make .venv        create/refresh the virtualenv"
	@echo "make clean        remove caches;  make distclean  also removes .venv"
	@echo "PYTEST_ARGS='-k x' passes arguments to pytest; PYTEST_WORKERS=N test processes (default 2, 0: one)"

# ---- bootstrap -----------------------------------------------------------------

venv .venv: $(VENV_STAMP)

# The stamp is rebuilt whenever pyproject.toml changes; an interrupted install
# leaves no stamp, so the next run retries.
$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), sys.version' || \
	  { echo "error: $(PYTHON) must be Python >= 3.11" >&2; exit 1; }
	@# Debian's own python3 ships without ensurepip unless python3-venv is installed.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { $(call apt_install,python3-venv); }
	@[ -x $(BIN)/python ] && $(BIN)/python -m pip --version >/dev/null 2>&1 || \
	  { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	@echo ">> $(VENV): pip install --upgrade pip; pip install -e '.[dev]'"
	@$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip 2>&1 | { grep -v '$(PIP_NOISE)' || true; }
	@$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]' 2>&1 | { grep -v '$(PIP_NOISE)' || true; }
	@touch $@

system-deps:
	@missing=""; \
	if ! ( $(have_postgres) ); then missing="postgresql"; fi; \
	for p in $(EXTRA_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	case " $$missing " in *" postgresql "*) \
	  : "The tests start their own throw-away server; stop Debian from creating and"; \
	  : "starting the default 'main' cluster on port 5432 when the package installs."; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo mkdir -p /etc/postgresql-common/createcluster.d; \
	  echo "create_main_cluster = false" | $$sudo tee /etc/postgresql-common/createcluster.d/50-calabi-no-main-cluster.conf >/dev/null;; \
	esac; \
	$(call apt_install,$$missing); \
	if ! ( $(have_postgres) ); then echo "error: initdb/pg_ctl still not found after install" >&2; exit 1; fi

# ---- checks --------------------------------------------------------------------

test: $(VENV_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)

fmt: $(VENV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# ---- running -------------------------------------------------------------------

demo: $(VENV_STAMP)
	$(BIN)/python -m examples.demo

bench: $(VENV_STAMP)
	$(BIN)/python -m bench

bench-engine: $(VENV_STAMP)
	$(BIN)/python -m bench --engine-only

bench-scale: $(VENV_STAMP)
	$(BIN)/python -m bench --scale-only

# ---- housekeeping --------------------------------------------------------------

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
