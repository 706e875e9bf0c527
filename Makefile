# Every target sets up .venv first (pinned by constraints.txt); see README.md.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench airflow clean

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/policylake demo --workdir policylake-demo

test: setup
	bash scripts/run-tests.sh

lint: setup
	$(BIN)/ruff check jobs dags tests bench
	$(BIN)/ruff format --check jobs dags tests bench

typecheck: setup
	$(BIN)/mypy

clean:
	rm -rf policylake-demo spark-warehouse metastore_db .pytest_cache
