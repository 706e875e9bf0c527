"""What the Airflow DAGs share: task defaults, the Spark submit settings, failure callbacks.

DAG files only wire tasks; they import this module, which does no I/O at import time.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs.config import SOURCES

# The Spark application every task submits (a file path, as spark-submit wants it).
ENTRY_APPLICATION = str(Path(__file__).with_name("entry.py"))
SPARK_CONN_ID = "spark_default"
# The logical date of a run is the start of its data interval: the day being processed.
LOGICAL_DATE = "{{ data_interval_start | ds }}"
DAILY_STAGES = (
    "validate",
    "normalize",
    "baselines",
    "score",
    "recommend",
    "export",
    "metrics",
    "report",
)
INGEST_SOURCES = SOURCES

log = logging.getLogger("policylake.airflow")


def notify_failure(context: dict[str, Any]) -> None:
    """Failure callback: one structured log line an alerting rule can match."""
    ti = context.get("task_instance")
    log.error(
        "policylake task failed: dag=%s task=%s map_index=%s date=%s try=%s error=%s",
        getattr(ti, "dag_id", "?"),
        getattr(ti, "task_id", "?"),
        getattr(ti, "map_index", -1),
        context.get("ds"),
        getattr(ti, "try_number", "?"),
        context.get("exception"),
    )


def default_args(retries: int = 2) -> dict[str, Any]:
    return {
        "owner": "policylake",
        "retries": retries,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": notify_failure,
    }


def submit_kwargs() -> dict[str, Any]:
    """Arguments of every SparkSubmitOperator: Delta jars, this Python for workers, UTC."""
    from jobs.spark import delta_maven_coordinate

    return {
        "application": ENTRY_APPLICATION,
        "conn_id": SPARK_CONN_ID,
        "packages": delta_maven_coordinate(),
        "conf": {
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
        },
        "env_vars": {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
    }


def stage_args(stage: str, *extra: str) -> list[str]:
    return ["--stage", stage, "--date", LOGICAL_DATE, *extra]
