#!/usr/bin/env bash
# Local Airflow for policylake (docs/airflow.md).
#
#   scripts/airflow-standalone.sh             start `airflow standalone` (UI on http://localhost:8080)
#   scripts/airflow-standalone.sh ARGS...     run `airflow ARGS...` against the same home, e.g.
#                                             scripts/airflow-standalone.sh dags trigger policylake_daily -l 2026-10-05
#
# Everything lives in ./airflow-home (git-ignored): the SQLite metadata DB, logs, the generated
# admin password. The DAGs are this repository's dags/; the Spark connection `spark_default`
# is a local master unless AIRFLOW_CONN_SPARK_DEFAULT is already set. Tasks read and write
# under POLICYLAKE_WORKDIR (default ./policylake-demo, what `make demo` generates).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
BIN="$REPO/.venv/bin"
[ -x "$BIN/airflow" ] || { echo "airflow-standalone: $BIN/airflow not found; run 'make setup' first" >&2; exit 1; }

export AIRFLOW_HOME="$REPO/airflow-home"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
# The UI and API listen on this machine only (the simple auth manager keeps a plaintext password).
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
# Each task is a spark-submit (a JVM); run as many at once as there are cores.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$(nproc 2>/dev/null || echo 2)}"
# Point this at a cluster (and nothing else) for production-like runs, e.g.
#   AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "spark://master:7077"}'
LOCAL_SPARK='{"conn_type": "spark", "host": "local[*]"}'
export AIRFLOW_CONN_SPARK_DEFAULT="${AIRFLOW_CONN_SPARK_DEFAULT:-$LOCAL_SPARK}"

# spark-submit and the Python the tasks run come from .venv (the pyspark installation).
export PATH="$BIN:$PATH"
export SPARK_HOME="${SPARK_HOME:-$("$BIN/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export POLICYLAKE_WORKDIR="${POLICYLAKE_WORKDIR:-$REPO/policylake-demo}"
if [ -z "${POLICYLAKE_CONFIG:-}" ] && [ -f "$REPO/policylake.yaml" ]; then
  export POLICYLAKE_CONFIG="$REPO/policylake.yaml"
fi
mkdir -p "$AIRFLOW_HOME"

if [ "$#" -gt 0 ]; then
  exec "$BIN/airflow" "$@"
fi
# Every Spark task runs in the pool `airflow.spark_pool` of the settings: one slot per core
# here (each task is a JVM); a task in a pool that does not exist is never scheduled.
POOL="$("$BIN/python" -c 'from jobs.core.config import load_settings; print(load_settings().airflow.spark_pool)')"
"$BIN/airflow" db migrate >/dev/null
"$BIN/airflow" pools set "$POOL" "${POLICYLAKE_SPARK_SLOTS:-$(nproc 2>/dev/null || echo 2)}" \
  "policylake Spark tasks (spark-submit, one JVM each)" >/dev/null
echo "airflow-standalone: pool $POOL with ${POLICYLAKE_SPARK_SLOTS:-$(nproc 2>/dev/null || echo 2)} slot(s)"
echo "airflow-standalone: AIRFLOW_HOME=$AIRFLOW_HOME, DAGs from $AIRFLOW__CORE__DAGS_FOLDER, work dir $POLICYLAKE_WORKDIR"
echo "airflow-standalone: the admin password is in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
exec "$BIN/airflow" standalone
