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
# ones alone (they restart the shared PostgreSQL, or load every core). Both passes run
# even when the first fails; the target fails when either did. A pass left without
# tests (pytest's exit code 5) is no failure unless both are. Select with MARK (a -m
# expression, joined to each pass's own) and PYTEST_ARGS (other arguments, e.g. -k);
# a -m in PYTEST_ARGS would replace the pass's own. --pdb needs TEST_WORKERS=0.
# Ctrl-C ends both (pytest exits 2 on it, which bash as sh would take for a failure).
TEST_WORKERS ?= 2
MARK ?=
define two_passes
	@trap 'exit 130' INT; status=0; empty=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "$(call marks,$(1),not serial)" $(PYTEST_ARGS); \
	rc=$$?; [ $$rc -eq 5 ] && empty=$$((empty + 1)) || [ $$rc -eq 0 ] || status=$$rc; \
	$(BIN)/python -m pytest -m "$(call marks,$(1),serial)" $(PYTEST_ARGS); \
	rc=$$?; [ $$rc -eq 5 ] && empty=$$((empty + 1)) || [ $$rc -eq 0 ] || status=$$rc; \
	[ $$empty -lt 2 ] || { echo "no test was selected"; exit 5; }; \
	exit $$status
endef
marks = $(if $(MARK),($(MARK)) and )$(1)$(2)

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
