"""Analyst feedback: ingest approvals, overrides and verdicts dropped for the day.

Wiring only. Publishes the `ops.analyst_decisions` asset, which the training DAG uses.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from jobs.orchestration import default_args, stage_args, submit_kwargs

ANALYST_DECISIONS = Asset("policylake://ops/analyst_decisions")

with DAG(
    dag_id="policylake_feedback",
    description="Ingest analyst decisions (approve, reject, override, verdicts)",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 10, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["policylake", "feedback"],
    doc_md=__doc__,
) as dag:
    SparkSubmitOperator(
        task_id="ingest_analyst_decisions",
        name="policylake-feedback",
        application_args=stage_args("feedback"),
        outlets=[ANALYST_DECISIONS],
        **submit_kwargs(),
    )
