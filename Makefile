# Every target sets up .venv first (pinned by constraints.txt) with what it needs: the demo
# only the pipeline, `make airflow` also Airflow, tests and checks everything; see README.md.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := pyproject.toml constraints.txt scripts/setup.sh

.PHONY: setup demo test lint typecheck bench airflow clean

$(VENV)/.installed-demo: $(DEPS)
	bash scripts/setup.sh demo
	touch $@

$(VENV)/.installed-airflow: $(DEPS)
	bash scripts/setup.sh airflow
	touch $@ $(VENV)/.installed-demo

$(VENV)/.installed-dev: $(DEPS)
	bash scripts/setup.sh dev
	touch $@ $(VENV)/.installed-airflow $(VENV)/.installed-demo

setup: $(VENV)/.installed-dev

demo: $(VENV)/.installed-demo
	$(BIN)/policylake demo --workdir policylake-demo

test: $(VENV)/.installed-dev
	bash scripts/install-chromium.sh
	bash scripts/run-tests.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check jobs dags tests bench
	$(BIN)/ruff format --check jobs dags tests bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Local Airflow (airflow standalone, SQLite in ./airflow-home, this repo's DAGs): docs/airflow.md
airflow: $(VENV)/.installed-airflow
	bash scripts/airflow-standalone.sh

# Pipeline benchmark, ~1 M and ~10 M events per day, targets and DuckDB reference: docs/benchmarks.md
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run_bench --scales 1,10 --baselines run

clean:
	rm -rf policylake-demo spark-warehouse metastore_db .pytest_cache
