# Two commands set a fresh clone up: `make run` and `make test`.
# Both first build .venv when it is missing or older than pyproject.toml/constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-sqlite test-postgres lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/framejobs serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	$(BIN)/python -m pytest -m "not postgres" $(PYTEST_ARGS)

test-postgres: $(STAMP)
	$(BIN)/python -m pytest -m postgres $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service tests bench migrations
	$(BIN)/ruff format --check service tests bench migrations
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format service tests bench migrations
	$(BIN)/ruff check --fix service tests bench migrations

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
