# thumbd: `make run` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?=

.PHONY: run test lint bench bench-deps system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## run: the daemon in the foreground on ./incoming and ./outgoing (CONFIG=file to use one)
run: $(STAMP)
	mkdir -p incoming outgoing
	$(BIN)/thumbd run $(if $(CONFIG),-c $(CONFIG))

## test: the whole suite (real daemon, real folders, real signals). Most tests wait on daemons
## and files rather than compute, so four at once fit two cores; TEST_JOBS=0 runs them one by one.
TEST_JOBS ?= 4
test: $(STAMP) system-deps
	$(BIN)/pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS))

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check thumbd tests $(wildcard bench)
	$(BIN)/ruff format --check thumbd tests $(wildcard bench)
	$(BIN)/mypy

## bench: benchmarks (not tests) on ../shared/corpus/photos (BENCH_ARGS="--quick" for a smoke run)
BENCH_ARGS ?=
bench: $(STAMP) bench-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

# What the benchmarks compare against and draw with: libvips' vipsthumbnail, Debian's ImageMagick
# (/usr/bin/convert), matplotlib and py-spy (the `bench` extra, not needed to run thumbd).
bench-deps: $(STAMP)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	@if ! command -v vipsthumbnail >/dev/null 2>&1 || ! [ -x /usr/bin/convert ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq libvips-tools imagemagick >/dev/null; \
	  else echo "note: vipsthumbnail or ImageMagick is missing; those baselines are skipped" \
	    "(sudo apt-get install libvips-tools imagemagick)"; fi; fi

# Programs the tests drive (rsync; systemd-analyze for the unit's checks; headless Chromium for
# the status page and the galleries, tests/browser.py). Installed when
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
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is missing; the browser tests will be skipped (apt-get install chromium)"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
