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

from datetime import timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from jobs import orchestration

settings = orchestration.dag_settings()
notify = orchestration.failure_notification(settings)

with DAG(
    dag_id="policylake_feedback",
    description="Ingest analyst decisions (approve, reject, override, verdicts) of one day",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=orchestration.start_date(settings),
    catchup=settings.airflow.catchup,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    default_args=orchestration.default_args(
        timeout=timedelta(hours=1), notifiers=[SmtpNotifier(**notify)] if notify else []
    ),
    user_defined_macros=orchestration.MACROS,
    tags=["policylake", "feedback"],
    doc_md=__doc__,
) as dag:
    arrived = task.short_circuit(
        python_callable=orchestration.analyst_decisions_arrived,
        task_id="analyst_files_arrived",
        execution_timeout=timedelta(minutes=10),
    )(day=orchestration.RUN_DAY)
    ingest = SparkSubmitOperator(
        task_id="ingest_analyst_decisions",
        name="policylake-feedback",
        application_args=orchestration.stage_args("feedback"),
        outlets=[
            Asset(orchestration.ASSET_ANALYST_DECISIONS),
            Asset(orchestration.ASSET_RECOMMENDATIONS),
        ],
        **orchestration.submit_kwargs(settings),
    )
    arrived >> ingest
