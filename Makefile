# keysplit: `make demo` and `make test` bootstrap .venv from requirements.lock on their own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two layers in one venv: the core (library + CLI, what `make demo` needs) and the full pinned
# set (extras, test and lint tools) on top. Each stamp names the hash of the files it came from.
CORE_STAMP := $(VENV)/.core-$(shell cat requirements-core.lock pyproject.toml | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.stamp-$(shell cat requirements.lock requirements-core.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv venv-core test test-fast lint typecheck pytest demo bench bench-full fuzz soak soak-smoke dist wheel-check clean

# pip compiles what it installs one file at a time; compileall -j0 does it on every core
# (a fresh venv 100-124 s against 114-153 s, two pairs on the loaded 2-core CI machine). Files
# that do not compile (a package's own syntax tests) are skipped as pip skips them.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile
COMPILE_VENV := -$(BIN)/python -m compileall -q -j0 $(VENV)/lib >/dev/null 2>&1

venv: $(STAMP)
venv-core: $(CORE_STAMP)

$(CORE_STAMP): requirements-core.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "keysplit needs Python 3.11+"'
	@# A venv without pip is one `python3 -m venv` left half-made (Debian/Ubuntu without the
	@# python3-venv package): made again, so installing that package is all a rerun needs.
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(PIP) -r requirements-core.lock
	$(PIP) --no-deps --no-build-isolation -e .
	$(COMPILE_VENV)
	@rm -f $(VENV)/.core-*
	@touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP) requirements.lock
	$(PIP) -r requirements.lock
	$(COMPILE_VENV)
	@rm -f $(VENV)/.stamp-*
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# benchmarks/ too (not strict): a benchmark's typing slip is a crash in the next quiet run.
typecheck: $(STAMP)
	$(BIN)/mypy keysplit cli benchmarks

# The PostgreSQL store tests start a throwaway server (tests/support/pg_fixture.py): skipped with one
# line without PostgreSQL, a failure under CI=true (.ci/run sets it, and installs PostgreSQL
# when missing).
# One pytest worker per core (pytest-xdist); a module's tests stay together and in order on
# one worker (--dist loadfile: the served fleets and Dask clusters of a module are built once),
# handed out in the order tests/conftest.py sorts them, the longest first: xdist would sort them
# again by their number of tests (--no-loadscope-reorder keeps a long module of a few slow tests
# from starting last). PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= auto
PYTEST_ARGS := -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Bytecode for the checkout's own packages first: they are installed editable, so with
# PYTHONDONTWRITEBYTECODE set (as on the CI machine) every CLI, server and worker process the
# tests start compiled keysplit from source again (0.35 s of a 1 s start on the CI machine).
COMPILE := $(BIN)/python -m compileall -q keysplit cli benchmarks tests/support

pytest: $(STAMP)
	$(COMPILE)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The same without the tests marked slow (10^5-key jobs, benchmark smoke runs): for a quick loop.
test-fast: lint typecheck
	$(COMPILE)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

# The parser and CLI fuzz tests of `make test`, with many more examples (minutes).
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	KEYSPLIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q \
		tests/unit/parsers/test_fuzz_parsers.py tests/cli/test_fuzz_cli.py

# The key-service soak (benchmarks/soak.py; minutes, not in make test or CI): client processes
# under SIGKILL/restart/unseal of the service and dropped store connections; exit 1 if any
# acknowledged record is lost. E.g. make soak SOAK_ARGS="--duration 600 --clients 6".
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# Its 15-second variant as one pytest test (32-35 s of wall time on the loaded 2-core machine).
soak-smoke: $(STAMP)
	KEYSPLIT_SOAK=1 HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q tests/unit/service/test_soak_smoke.py

# Only the core venv: the demo needs no extras (15 s from a fresh clone on a quiet 2-core machine, measured 2026-12-05).
demo: $(CORE_STAMP)
	$(BIN)/keysplit demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks --full

# The wheel and sdist, installed into a fresh venv with only the core pins, running the demo from
# there: catches a module or data file missing from the package list (CI runs it after make test).
DIST := build/dist
dist: $(STAMP)
	rm -rf $(DIST)
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir $(DIST) . >/dev/null

wheel-check: dist
	rm -rf build/wheel-venv build/wheel-demo
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile \
		-c requirements-core.lock $(DIST)/keysplit-*.whl
	tar -tzf $(DIST)/keysplit-*.tar.gz | grep '/LICENSE$$' >/dev/null
	$(BIN)/python -m zipfile -l $(DIST)/keysplit-*.whl | grep 'licenses/LICENSE ' >/dev/null
	mkdir -p build/wheel-demo && cd build/wheel-demo && ../wheel-venv/bin/keysplit demo >/dev/null
	@echo "wheel-check: the installed wheel ran keysplit demo"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
