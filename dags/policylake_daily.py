"""Daily policylake run: one run per logical date, the UTC day it processes.

Wiring only (the logic is in `jobs/`). Every Spark task submits `jobs/cli/submit.py` (the
`policylake` command line) for one stage and the run's day to the Spark connection
`spark_default` (a local master by default; point the connection at a cluster for
production, nothing else changes), in the Airflow pool `airflow.spark_pool`:

    wait_for_files -> ingest_sources -> ingest[one per source, mapped] -> validate
        -> normalize -> baselines -> score -> recommend -> export -> metrics -> report

or, with `airflow.daily_tasks: one_application` (small volumes: one JVM for the night),

    wait_for_files -> night (`policylake run --date D`: every stage in one application)

- `wait_for_files` (a sensor, reschedule mode) waits until every configured source has
  files for the day and the late-file grace after it has passed, or at most
  `airflow.late_files_max_wait_hours`; `ingest_sources` reads `ingest.sources` when the run
  starts, and `ingest` is mapped over its result (one spark-submit per source, at most
  `airflow.max_parallel_ingest` at once, each shown by its source's name).
- Schedule: the data interval is the UTC day [D 00:00, D+1 00:00). The start date and
  catch-up come from the settings (`airflow.start_date`, `airflow.catchup`: off by default,
  so a new deployment runs only the latest day); max_active_runs=1, and baselines and score
  of day D also wait for day D-1's to succeed.
- With `airflow.publish_deadline` set, a Deadline Alert fires when the day's run (its
  recommendations) has not finished by that UTC time the next day; failures and missed deadlines go to
  `airflow.notify_emails` through the SMTP connection `airflow.smtp_conn_id`.
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

from datetime import timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import (
    DAG,
    Asset,
    AsyncCallback,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    task,
)

from jobs import orchestration

# Incremental stages: day D builds on day D-1's output.
DEPENDS_ON_PAST = ("baselines", "score")

settings = orchestration.dag_settings()
notify = orchestration.failure_notification(settings)
due = orchestration.publish_deadline(settings)

with DAG(
    dag_id="policylake_daily",
    description="Ingest, validate, normalize, baseline, score and recommend one day of telemetry",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=orchestration.start_date(settings),
    catchup=settings.airflow.catchup,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=16),
    default_args=orchestration.default_args(notifiers=[SmtpNotifier(**notify)] if notify else []),
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=due,
        callback=AsyncCallback(
            orchestration.deadline_missed, kwargs=orchestration.deadline_kwargs(settings)
        ),
    )
    if due is not None
    else None,
    params={
        "blocking_sources": Param(
            "",
            type="string",
            description="Sources that must be ok for this run (comma-separated, or all); "
            "empty: the Variable policylake_blocking_sources",
        )
    },
    user_defined_macros=orchestration.MACROS,
    tags=["policylake", "daily"],
    doc_md=__doc__,
) as dag:
    cfg = settings.airflow
    wait = task.sensor(
        python_callable=orchestration.day_files_ready,
        task_id="wait_for_files",
        mode="reschedule",
        poke_interval=orchestration.FILES_POKE_INTERVAL,
        timeout=timedelta(hours=cfg.late_files_max_wait_hours + 2),
        retries=0,
    )(day=orchestration.RUN_DAY)
    if cfg.daily_tasks == "one_application":
        # the whole night (ingest of every configured source .. report) in one task and one
        # Spark application; a blocking source that is not ok stops it after validate
        night = SparkSubmitOperator(
            task_id=orchestration.NIGHT_TASK,
            name="policylake-night",
            application_args=orchestration.night_args(),
            outlets=[Asset(u) for uris in orchestration.DAILY_OUTLETS.values() for u in uris],
            depends_on_past=True,
            execution_timeout=timedelta(hours=8),
            **orchestration.submit_kwargs(settings),
        )
        wait >> night
    else:
        sources = task(
            python_callable=orchestration.ingest_plan,
            task_id="ingest_sources",
            execution_timeout=timedelta(minutes=10),
        )(day=orchestration.RUN_DAY)
        ingest = SparkSubmitOperator.partial(
            task_id="ingest",
            name="policylake-ingest",
            execution_timeout=timedelta(hours=1),
            max_active_tis_per_dagrun=cfg.max_parallel_ingest,
            map_index_template=orchestration.INGEST_MAP_INDEX,
            **orchestration.submit_kwargs(settings),
        ).expand(application_args=sources)
        wait >> sources
        upstream = ingest
        for stage in orchestration.DAILY_STAGES:
            extra = (orchestration.BLOCKING_SOURCES_ARG,) if stage == "validate" else ()
            stage_task = SparkSubmitOperator(
                task_id=stage,
                name=f"policylake-{stage}",
                application_args=orchestration.stage_args(stage, *extra),
                outlets=[Asset(uri) for uri in orchestration.DAILY_OUTLETS.get(stage, ())],
                depends_on_past=stage in DEPENDS_ON_PAST,
                **orchestration.submit_kwargs(settings),
            )
            upstream >> stage_task
            upstream = stage_task
