"""Weekly table upkeep: retention properties, layout, compaction and VACUUM of every table.

Wiring only. One Spark task runs `policylake maintain` (`jobs/pipeline/maintenance.py`): it
sets `delta.logRetentionDuration` and `delta.deletedFileRetentionDuration` from the
`maintenance` settings, rewrites a table once when its partitioning changed, compacts small
files (OPTIMIZE) and vacuums with each table's own retention, so a Change Data Feed cursor
inside the documented window keeps working (docs/policies.md). It changes files, never rows.

Schedule: `maintenance.schedule` (cron, UTC; default Saturdays 03:00, after the night's
run), no catch-up: a missed week is done by the next one.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, CronTriggerTimetable

from jobs import orchestration

settings = orchestration.dag_settings()
notify = orchestration.failure_notification(settings)

with DAG(
    dag_id="policylake_maintenance",
    description="Compact and vacuum every policylake table with the configured retention",
    schedule=CronTriggerTimetable(settings.maintenance.schedule, timezone="UTC"),
    start_date=orchestration.start_date(settings),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=8),
    default_args=orchestration.default_args(
        retries=1, timeout=timedelta(hours=6), notifiers=[SmtpNotifier(**notify)] if notify else []
    ),
    user_defined_macros=orchestration.MACROS,
    tags=["policylake", "maintenance"],
    doc_md=__doc__,
) as dag:
    SparkSubmitOperator(
        task_id="maintain",
        name="policylake-maintain",
        application_args=list(orchestration.MAINTAIN_ARGS),
        **orchestration.submit_kwargs(settings),
    )
