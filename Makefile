# The two commands of CONTRACT.md: `make run` and `make test`. Both create .venv if missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-unit lint typecheck bench verify sources tail schemas clean

# pip's and the build backend's chatter goes to $(VENV)/pip.log, shown only when it fails
PIP = $(BIN)/python -m pip install --quiet
QUIETLY = >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; echo "make: pip install failed (above, and in $(VENV)/pip.log)"; exit 1; }

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	@echo "make: creating $(VENV) and installing streamapp with its dependencies (first run only)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip $(QUIETLY)

# reinstall whenever pyproject.toml changes
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@$(PIP) -e '.[broker]' $(QUIETLY)
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@$(PIP) -e '.[broker,test,rocksdb]' $(QUIETLY)
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@$(BIN)/python -m streamapp.devtools.launcher

lint: $(VENV)/.installed-test
	$(BIN)/ruff check streamapp tests
	$(BIN)/ruff format --check streamapp tests

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# everything: lint, types, the import rule, unit and integration tests (what CI runs)
test: $(VENV)/.installed-test
	$(BIN)/ruff check streamapp tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n 8 --dist load

# fast feedback: the tests that need no broker (under a minute)
test-unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not broker"

# the faust app commands, as make targets (ARGS="--source prod" etc.)
FAUST := $(BIN)/faust -A streamapp.app

verify: $(VENV)/.installed-run
	@$(FAUST) verify $(ARGS)

sources: $(VENV)/.installed-run
	@$(FAUST) sources $(ARGS)

tail: $(VENV)/.installed-run
	@$(FAUST) tail $(ARGS)

schemas: $(VENV)/.installed-run
	@$(BIN)/python -m streamapp.cli.schemas

bench: $(VENV)/.installed-test
	@mkdir -p bench/results
	$(BIN)/python -m bench --json bench/results/latest.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
