# thumbd: `make run` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Installed: thumbd and what running it needs; and that plus the dev extra (pytest, ruff, mypy,
# Dask), which only `test`, `lint` and `bench` need.
RUN_STAMP := $(VENV)/.run-stamp
STAMP  := $(VENV)/.installed-stamp
CONFIG ?=

.PHONY: run test lint chaos mutate bench bench-deps system-deps fogra39 clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# The dev extra holds thumbd too: once it is in, `run` needs no install of its own.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

## run: the daemon in the foreground on ./incoming and ./outgoing. The first run writes
## ./thumbd.toml (a copy of etc/thumbd.toml), which `.venv/bin/thumbd status` and the other
## commands then find in this folder; CONFIG=file runs on that file instead.
run: $(RUN_STAMP)
	mkdir -p incoming outgoing
	$(if $(CONFIG),,[ -e thumbd.toml ] || cp etc/thumbd.toml thumbd.toml)
	$(BIN)/thumbd run -c $(or $(CONFIG),thumbd.toml)

## test: the whole suite (real daemon, real folders, real signals). Most tests wait on daemons
## and files rather than compute (with four at once two cores were half idle: 9m51s; with eight,
## 5m44s at 80 % of both), so eight run at once; TEST_JOBS=0 runs them one by one.
TEST_JOBS ?= 8
test: $(STAMP) system-deps
	$(BIN)/pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS))

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check thumbd tests $(wildcard bench)
	$(BIN)/ruff format --check thumbd tests $(wildcard bench)
	$(BIN)/mypy

## chaos: seeded random operations on the real daemon, checked against a model at every quiet
## point (docs/chaos.md). SEED is the first seed, OPS the operations per seed; MINUTES keeps
## running further seeds until that much time has passed (0: just the one seed).
SEED ?= 1
OPS ?= 300
MINUTES ?= 0
chaos: $(STAMP) system-deps
	PYTHONPATH=. $(BIN)/python -m tests.chaos --seed $(SEED) --ops $(OPS) --minutes $(MINUTES)

## mutate: mutation testing (mutmut) of the pure modules, each against its own unit tests; one
## `mutation score:` line per module (docs/mutation.md). MODULES="names manifest" limits the run,
## MUTATE_ARGS=-v shows each survivor's diff. Minutes, not seconds: not part of `test` or CI.
MODULES ?=
MUTATE_ARGS ?=
mutate: $(STAMP)
	$(BIN)/python -m tests.mutate $(MUTATE_ARGS) $(MODULES)

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

# Programs the tests drive (rsync; systemd-analyze for the unit's checks; ffmpeg makes the video
# test clips, thumbd itself decodes video with PyAV and never runs it; headless Chromium for the
# status page and the galleries, tests/browser.py). Installed when
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
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "note: ffmpeg is missing; the video tests will be skipped (apt-get install ffmpeg)"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is missing; the browser tests will be skipped (apt-get install chromium)"; fi; }

# The built-in CMYK profile and the test patches, rebuilt from Fogra's FOGRA39L data (Debian's
# icc-profiles-free) with ArgyllCMS' colprof. Not part of `test`: both are committed, and the RAW
# and CMYK tests need no system package (rawpy's wheels bundle LibRaw).
fogra39:
	@if ! command -v colprof >/dev/null 2>&1 || ! [ -r /usr/share/color/icc/FOGRA39L.ti3 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq argyll icc-profiles-free >/dev/null; fi
	sh tools/build-fogra39.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
