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
	bash scripts/install-chromium.sh
	bash scripts/run-tests.sh

lint: setup
	$(BIN)/ruff check jobs dags tests bench
	$(BIN)/ruff format --check jobs dags tests bench
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

# Local Airflow (airflow standalone, SQLite in ./airflow-home, this repo's DAGs): docs/airflow.md
airflow: setup
	bash scripts/airflow-standalone.sh

# Pipeline benchmark, ~1 M and ~10 M events per day, targets and DuckDB reference: docs/benchmarks.md
bench: setup
	$(BIN)/python -m bench.run_bench --scales 1,10 --baselines run

clean:
	rm -rf policylake-demo spark-warehouse metastore_db .pytest_cache
