# keysplit: `make demo` and `make test` bootstrap .venv from requirements.lock on their own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv test lint typecheck pytest demo bench bench-full fuzz clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "keysplit needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy keysplit cli

# The PostgreSQL store tests start a throwaway server (tests/pg_fixture.py): skipped with one
# line without PostgreSQL, a failure under CI=true (.ci/run installs it when missing).
pytest: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q

test: lint typecheck pytest

# The parser and CLI fuzz tests of `make test`, with many more examples (minutes).
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	KEYSPLIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q \
		tests/test_fuzz_parsers.py tests/test_fuzz_cli.py

demo: $(STAMP)
	$(BIN)/keysplit demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
