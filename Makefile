# The two commands of CONTRACT.md: `make run` and `make test`. Both create .venv if missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-unit lint typecheck bench verify sources tail schemas clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip

# reinstall whenever pyproject.toml changes
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install --quiet -e '.[broker]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install --quiet -e '.[broker,test,rocksdb]'
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
