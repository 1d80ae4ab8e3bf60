# carepost: `make run` starts everything on SQLite; `make test` runs the whole suite.
# Each target creates ./.venv when it is missing and reinstalls only when
# pyproject.toml changes (stamp files in .venv). See README.md.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=
# Root needs no sudo (CI machines run as root); others use it when present.
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)

.DEFAULT_GOAL := help
.PHONY: help run test lint bench clean chromium dkim-verifiers

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 10

run: $(VENV)/.installed ## Install, migrate, create the demo, serve on http://127.0.0.1:8000
	$(BIN)/carepost demo
	$(BIN)/carepost serve

test: $(VENV)/.installed-test chromium dkim-verifiers ## Install everything the suite needs and run it
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test ## ruff (lint and format) and mypy
	$(BIN)/ruff check carepost tests bench
	$(BIN)/ruff format --check carepost tests bench
	$(BIN)/mypy carepost

bench: $(VENV)/.installed ## Run the benchmarks
	$(BIN)/python -m bench

clean: ## Remove the virtual environment and caches (keeps ./var: your data and master key)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	@echo "Kept ./var (database and master key). Delete it yourself to start over."

$(BIN)/python:
	@echo "Creating the virtual environment $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "'$(PYTHON) -m venv' failed; installing Debian's python3-venv and retrying"; \
	  rm -rf $(VENV); \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); \
	}

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# The browser tests drive Debian's chromium (Playwright's own browsers are not used).
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "$(CHROMIUM) is missing: installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

# The DKIM tests check carepost's signatures with two independent verifiers besides
# dkimpy: OpenDKIM's opendkim-testmsg and Perl's Mail::DKIM (tests/delivery/test_dkim.py).
dkim-verifiers:
	@if ! command -v opendkim-testmsg >/dev/null 2>&1 || ! perl -MMail::DKIM -e1 2>/dev/null; then \
	  echo "Installing Debian's opendkim-tools and libmail-dkim-perl for the DKIM tests"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    opendkim-tools libmail-dkim-perl; \
	fi
