"""Daily policylake run: one run per logical date (the day in the data interval).

Wiring only: every task submits `jobs/entry.py` for one stage and the run's date to the
Spark connection `spark_default` (local master by default; point it at a cluster for
production). catchup=True makes Airflow backfill missed days in order.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from jobs.orchestration import DAILY_STAGES, INGEST_SOURCES, default_args, stage_args, submit_kwargs

RECOMMENDATIONS = Asset("policylake://gold/policy_recommendations")
SESSION_SCORES = Asset("policylake://gold/session_scores")

with DAG(
    dag_id="policylake_daily",
    description="Ingest, validate, normalize, baseline, score and recommend one day of telemetry",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2026, 10, 1),
    catchup=True,
    max_active_runs=1,  # dates in order: baselines of day D read day D-1
    default_args=default_args(),
    tags=["policylake", "daily"],
    doc_md=__doc__,
) as dag:
    ingest = SparkSubmitOperator.partial(
        task_id="ingest", name="policylake-ingest", **submit_kwargs()
    ).expand(application_args=[stage_args("ingest", "--source", s) for s in INGEST_SOURCES])

    previous = ingest
    for stage in DAILY_STAGES:
        outlets = {"score": [SESSION_SCORES], "recommend": [RECOMMENDATIONS]}.get(stage, [])
        task = SparkSubmitOperator(
            task_id=stage,
            name=f"policylake-{stage}",
            application_args=stage_args(stage),
            outlets=outlets,
            **submit_kwargs(),
        )
        previous >> task
        previous = task
