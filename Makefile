# thumbd: `make run` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?=

.PHONY: run test lint bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## run: the daemon in the foreground on ./incoming and ./outgoing (CONFIG=file to use one)
run: $(STAMP)
	mkdir -p incoming outgoing
	$(BIN)/thumbd run $(if $(CONFIG),-c $(CONFIG))

## test: the whole suite (real daemon, real folders, real signals)
test: $(STAMP) system-deps
	$(BIN)/pytest

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check thumbd tests $(wildcard bench)
	$(BIN)/ruff format --check thumbd tests $(wildcard bench)
	$(BIN)/mypy

## bench: benchmarks (not tests) on ../shared/corpus/photos
bench: $(STAMP) system-deps
	$(BIN)/python -m bench

# Programs the tests drive (rsync; systemd-analyze for the unit's checks). Installed when
# missing and we may (root, as in CI). The systemd package installs fine without a running
# systemd; systemd-analyze verify and security --offline need none.
system-deps:
	@command -v rsync >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null; \
	  else echo "note: rsync is missing; the rsync tests will be skipped (apt-get install rsync)"; fi; }
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
	  else echo "note: systemd-analyze is missing; the unit checks will be skipped (apt-get install systemd)"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
