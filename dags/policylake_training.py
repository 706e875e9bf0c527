"""Weekly model training: train on recent sessions and analyst labels, register in MLflow.

Wiring only. Runs weekly, and also when new analyst decisions arrive (asset-aware).
The alias `champion` moves only when the new model is at least as good.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable

from jobs.orchestration import default_args, stage_args, submit_kwargs

ANALYST_DECISIONS = Asset("policylake://ops/analyst_decisions")

with DAG(
    dag_id="policylake_training",
    description="Train the session risk model and promote it if it is at least as good",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * 0", timezone="UTC"), assets=ANALYST_DECISIONS
    ),
    start_date=datetime(2026, 10, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=1),
    tags=["policylake", "training"],
    doc_md=__doc__,
) as dag:
    SparkSubmitOperator(
        task_id="train",
        name="policylake-train",
        application_args=stage_args("train"),
        **submit_kwargs(),
    )
