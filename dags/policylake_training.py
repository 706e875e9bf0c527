"""Model training: the session risk model on the last 28 days, registered in MLflow.

Wiring only. Runs every Sunday at 06:00 UTC (on the 28 days through Saturday), and also
when the feedback DAG ingested new analyst decisions (the `ops.analyst_decisions`
asset; such a run trains on the 28 days before the asset event). The alias `champion`
moves only when the new model is at least as good on held-out labels (`jobs/model/train.py`).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable

from jobs import orchestration

settings = orchestration.dag_settings()
notify = orchestration.failure_notification(settings)

with DAG(
    dag_id="policylake_training",
    description="Train the session risk model and promote it if it is at least as good",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * 0", timezone="UTC"),
        assets=Asset(orchestration.ASSET_ANALYST_DECISIONS),
    ),
    start_date=orchestration.start_date(settings),
    catchup=False,  # a missed week is not worth training for; the next run uses all days
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=orchestration.default_args(
        retries=1,
        timeout=timedelta(hours=4),
        notifiers=[SmtpNotifier(**notify)] if notify else [],
    ),
    user_defined_macros=orchestration.MACROS,
    tags=["policylake", "training"],
    doc_md=__doc__,
) as dag:
    SparkSubmitOperator(
        task_id="train",
        name="policylake-train",
        application_args=orchestration.stage_args(
            "train", "--days", str(orchestration.TRAIN_DAYS), day=orchestration.TRAIN_LAST_DAY
        ),
        outlets=[Asset(orchestration.ASSET_MODEL)],
        **orchestration.submit_kwargs(settings),
    )
