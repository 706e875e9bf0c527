"""Analyst feedback: ingest the approvals, rejections, overrides and verdicts of one day.

Wiring only. Analysts (or their case tool) drop signed CSV or JSON-lines files into
`<paths.analyst_decisions>/<YYYY-MM-DD>/` during the day; the run for day D
(at D+1 00:00 UTC) ingests that folder into `ops.analyst_decisions` (refused decisions:
`ops.refused_decisions`, docs/policies.md) and updates the
statuses in `gold.policy_recommendations` (a MERGE on a deterministic decision id, so
re-running a day changes nothing). A day with no file skips the ingest task, so no
asset event is published; otherwise the `ops.analyst_decisions` asset triggers the
training DAG (new labels).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from jobs import orchestration

with DAG(
    dag_id="policylake_feedback",
    description="Ingest analyst decisions (approve, reject, override, verdicts) of one day",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 10, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    default_args=orchestration.default_args(timeout=timedelta(hours=1)),
    tags=["policylake", "feedback"],
    doc_md=__doc__,
) as dag:
    arrived = ShortCircuitOperator(
        task_id="analyst_files_arrived",
        python_callable=orchestration.analyst_decisions_arrived,
        op_kwargs={"day": orchestration.RUN_DAY},
        execution_timeout=timedelta(minutes=10),
    )
    ingest = SparkSubmitOperator(
        task_id="ingest_analyst_decisions",
        name="policylake-feedback",
        application_args=orchestration.stage_args("feedback"),
        outlets=[
            Asset(orchestration.ASSET_ANALYST_DECISIONS),
            Asset(orchestration.ASSET_RECOMMENDATIONS),
        ],
        **orchestration.submit_kwargs(),
    )
    arrived >> ingest
