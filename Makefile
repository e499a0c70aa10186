PYTHON ?= python3
DEMO_PORT ?= 9464
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs unit integration bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/keywatch demo --port $(DEMO_PORT)

lint: $(STAMP)
	$(BIN)/ruff check monitor tests bench
	$(BIN)/ruff format --check monitor tests bench
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict bench/*.py

# The documentation site (mkdocs.yml); --strict turns a broken link or anchor into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Fast, in-process tests (under 30 s on two cores).
unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Real servers on loopback, subprocesses, PostgreSQL, Prometheus and Alertmanager.
integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

test: lint typecheck docs unit integration

# Every script under bench/, one table of figures, bench/results.md; FULL=1 runs longer.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/all.py $(if $(FULL),--full)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info site
