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

# Two passes: most tests on TEST_WORKERS processes (pytest-xdist), then the `serial`
# ones alone (they restart the shared PostgreSQL, or load every core). A pass that
# PYTEST_ARGS leaves without tests (exit code 5) is no failure.
TEST_WORKERS ?= 2
define two_passes
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "$(1)not serial" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "$(1)serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]
endef

test: $(STAMP)
	$(call two_passes,)

test-sqlite: $(STAMP)
	$(call two_passes,not postgres and )

test-postgres: $(STAMP)
	$(call two_passes,postgres and )

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
