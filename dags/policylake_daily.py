"""Daily policylake run: one run per logical date, the UTC day it processes.

Wiring only (the logic is in `jobs/`). Every task submits `jobs/cli/submit.py` (the
`policylake` command line) for one stage and the run's day to the Spark connection `spark_default` (a local master by default;
point the connection at a cluster for production, nothing else changes):

    wait_for_late_files -> ingest_sources -> ingest[one per source, mapped] -> validate
        -> normalize -> baselines -> score -> recommend -> export -> metrics -> report

`ingest_sources` reads `ingest.sources` from the settings when the run starts (no Spark),
and `ingest` is mapped over its result: one spark-submit per configured source.

- Schedule: the data interval is the UTC day [D 00:00, D+1 00:00); the run waits until
  D+1 02:00 for late vendor files. catchup=True backfills missed days, in order
  (max_active_runs=1; baselines and score of day D also wait for day D-1's to succeed).
- Keyed on the day (`{{ logical_date | ds }}`), never the wall clock; every stage
  replaces whole dates atomically, so retries, re-runs and backfills are idempotent.
- Failures: a failed task leaves its downstream tasks `upstream_failed` (all_success
  trigger rule), so nothing runs on data a gate refused. Hard gates always fail their
  task: the ingest line count, the validate GX/row-predicate cross-check and suite errors,
  the normalize reconciliation and silver contract. A degraded or missing source only
  fails validate when it is blocking: the run's `blocking_sources` param (conf
  `{"blocking_sources": "idp,windows"}`, or `all`), else the Airflow Variable
  `policylake_blocking_sources`; otherwise later stages discount its signals.
  docs/airflow.md has the details.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensor
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from jobs import orchestration

# Incremental stages: day D builds on day D-1's output.
DEPENDS_ON_PAST = ("baselines", "score")

with DAG(
    dag_id="policylake_daily",
    description="Ingest, validate, normalize, baseline, score and recommend one day of telemetry",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 10, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=16),
    default_args=orchestration.default_args(),
    params={
        "blocking_sources": Param(
            "",
            type="string",
            description="Sources that must be ok for this run (comma-separated, or all); "
            "empty: the Variable policylake_blocking_sources",
        )
    },
    tags=["policylake", "daily"],
    doc_md=__doc__,
) as dag:
    wait = DateTimeSensor(
        task_id="wait_for_late_files",
        target_time=orchestration.GRACE_TARGET_TIME,
        mode="reschedule",
        poke_interval=300,
        timeout=timedelta(hours=8).total_seconds(),
        retries=0,
    )
    sources = PythonOperator(
        task_id="ingest_sources",
        python_callable=orchestration.ingest_plan,
        op_kwargs={"day": orchestration.RUN_DAY},
        execution_timeout=timedelta(minutes=10),
    )
    ingest = SparkSubmitOperator.partial(
        task_id="ingest",
        name="policylake-ingest",
        execution_timeout=timedelta(hours=1),
        **orchestration.submit_kwargs(),
    ).expand(application_args=sources.output)
    wait >> sources
    upstream = ingest
    for stage in orchestration.DAILY_STAGES:
        extra = (orchestration.BLOCKING_SOURCES_ARG,) if stage == "validate" else ()
        task = SparkSubmitOperator(
            task_id=stage,
            name=f"policylake-{stage}",
            application_args=orchestration.stage_args(stage, *extra),
            outlets=[Asset(uri) for uri in orchestration.DAILY_OUTLETS.get(stage, ())],
            depends_on_past=stage in DEPENDS_ON_PAST,
            **orchestration.submit_kwargs(),
        )
        upstream >> task
        upstream = task
