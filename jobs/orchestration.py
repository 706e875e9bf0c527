"""What the Airflow DAGs share: task defaults, the Spark submit settings, callbacks, dates.

DAG files only wire tasks; they import this module, which must stay cheap to import in the
DAG processor: no pyspark, no Airflow, no file system or network access at import time.
Everything that needs the environment (settings, files) happens when a task runs.

Dates. Every task works on one UTC day, rendered from the run by a Jinja template:

- daily and feedback runs process the day of their logical date. For the scheduled and
  backfill runs of their `CronDataIntervalTimetable("0 0 * * *")` that *is* the data
  interval (`[D 00:00, D+1 00:00)` has logical date D). Manual runs are keyed on the
  logical date the user gave (`airflow dags trigger -l D`), because Airflow 3 infers a
  manual run's data interval as "the last complete interval before" the trigger time;
- training runs train on the 28 days before their logical date (a scheduled weekly run at
  Sunday 06:00 trains through Saturday), or, when new analyst decisions triggered the run
  (asset-triggered runs have no logical date), before the run's `run_after`, the time of
  the triggering asset event. Never the wall clock.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs.core.config import SOURCES, load_rooted
from jobs.core.packages import delta_maven_coordinate
from jobs.governance.decision_files import analyst_decision_files, analyst_decisions_dir

# The Spark application every task submits (a file path, as spark-submit wants it).
ENTRY_APPLICATION = str(Path(__file__).with_name("cli") / "submit.py")
SPARK_CONN_ID = "spark_default"

# The UTC day a daily or feedback run processes (see the module docstring).
RUN_DAY = "{{ logical_date | ds }}"
# The last day a training run trains on: the day before its logical date / trigger time.
TRAIN_LAST_DAY = "{{ macros.ds_add((logical_date or dag_run.run_after) | ds, -1) }}"
TRAIN_DAYS = 28
# Late vendor files: a daily run starts this long after its day has ended.
LATE_FILE_GRACE = timedelta(hours=2)
GRACE_TARGET_TIME = "{{ (logical_date + macros.timedelta(days=1, hours=2)).isoformat() }}"

# After `ingest` (mapped over the configured sources), in this order; the task ids are these.
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
INGEST_SOURCES = SOURCES  # every source a deployment can configure (ingest.sources)

# Airflow Variables read when a task runs (never at parse time); both optional.
BLOCKING_SOURCES_VARIABLE = "policylake_blocking_sources"
EXTRA_PACKAGES_VARIABLE = "policylake_spark_packages"
# The daily DAG's `blocking_sources` param (a run's conf) wins over the Variable.
BLOCKING_SOURCES_ARG = (
    "--blocking-sources={{ params.blocking_sources if params.blocking_sources "
    f"else var.value.get('{BLOCKING_SOURCES_VARIABLE}', '') }}}}"
)


# Asset URIs (the DAG files build `airflow.sdk.Asset`s from them): what each DAG publishes.
ASSET_SESSION_SCORES = "policylake://gold/session_scores"
ASSET_RECOMMENDATIONS = "policylake://gold/policy_recommendations"
ASSET_METRICS = "policylake://gold/metrics_daily"
ASSET_ANALYST_DECISIONS = "policylake://ops/analyst_decisions"
ASSET_MODEL = "policylake://mlflow/policylake-session-risk"
# Which daily task publishes which asset.
DAILY_OUTLETS = {
    "score": (ASSET_SESSION_SCORES,),
    "recommend": (ASSET_RECOMMENDATIONS,),
    "metrics": (ASSET_METRICS,),
}

log = logging.getLogger("policylake.airflow")


def notify_failure(context: Any) -> None:
    """Failure callback: one structured log line an alerting rule can match.

    Extend here (Slack, PagerDuty, an Airflow notifier) rather than in the DAG files.
    """
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


def default_args(retries: int = 2, timeout: timedelta = timedelta(hours=2)) -> dict[str, Any]:
    """Task defaults: a stage that fails for a transient reason (executor lost, a Delta
    commit conflict) is retried; every stage replaces whole dates, so a retry is safe."""
    return {
        "owner": "policylake",
        "retries": retries,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timeout,
        "on_failure_callback": notify_failure,
    }


def packages_template() -> str:
    """Delta, plus the comma-separated Maven coordinates in the optional Airflow Variable
    `policylake_spark_packages` (e.g. hadoop-aws for an s3a:// lake), rendered per task."""
    extra = f"var.value.get('{EXTRA_PACKAGES_VARIABLE}', '')"
    return f"{{{{ (['{delta_maven_coordinate()}'] + {extra}.split(',')) | map('trim') | select | join(',') }}}}"


def submit_kwargs() -> dict[str, Any]:
    """Arguments of every SparkSubmitOperator. Master, deploy mode and queue come from the
    connection `spark_default`; settings from `policylake.yaml` / `POLICYLAKE_*` in the
    worker's environment, which spark-submit passes on to `jobs/cli/submit.py`."""
    return {
        "application": ENTRY_APPLICATION,
        "conn_id": SPARK_CONN_ID,
        "packages": packages_template(),
        "conf": {
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
            "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        },
        # The interpreter the Airflow worker runs, which has this project installed.
        "env_vars": {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
    }


# Jobs besides the daily stages: `policylake train|feedback --date D`.
JOBS = ("train", "feedback")


def stage_args(stage: str, *extra: str, day: str = RUN_DAY) -> list[str]:
    """The `policylake` arguments of one task: `run --stage S --date D`, or a job's own."""
    if stage in JOBS:
        return [stage, "--date", day, *extra]
    return ["run", "--stage", stage, "--date", day, *extra]


def ingest_plan(day: str) -> list[list[str]]:
    """The daily DAG's `ingest_sources` task: one `application_args` per source configured
    in `ingest.sources`, read when the run starts, which the `ingest` task is mapped over."""
    settings = load_rooted()
    plan = [stage_args("ingest", "--source", source, day=day) for source in settings.ingest.sources]
    log.info("ingest %s: %s", day, ", ".join(settings.ingest.sources) or "no source configured")
    return plan


def analyst_decisions_arrived(day: str) -> bool:
    """ShortCircuit callable of the feedback DAG: False (skip ingest, publish no asset event,
    so training is not re-triggered) when no analyst file landed for `day`."""
    root = load_rooted().paths.analyst_decisions
    files = analyst_decision_files(root, day)
    log.info(
        "analyst decision files for %s in %s: %d", day, analyst_decisions_dir(root, day), len(files)
    )
    return bool(files)
