"""What the Airflow DAGs share: task defaults, the Spark submit settings, callbacks, dates.

DAG files only wire tasks; they import this module, which must stay cheap to import in the
DAG processor: no pyspark, no Airflow, no file system or network access at import time.
When a DAG file is parsed it reads the settings once (`dag_settings`: the file
$POLICYLAKE_CONFIG names, or ./policylake.yaml, and POLICYLAKE__... overrides; the `airflow`
and `maintenance` sections shape the DAGs); everything else that needs the environment (raw
files, the lake) happens when a task runs.

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
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from jobs.core.config import SOURCES, Settings, load_rooted, load_settings
from jobs.core.packages import local_jars, spark_packages
from jobs.governance.decision_files import analyst_decision_files, analyst_decisions_dir

# The Spark application every task submits (a file path, as spark-submit wants it).
ENTRY_APPLICATION = str(Path(__file__).with_name("cli") / "submit.py")
SPARK_CONN_ID = "spark_default"

# The UTC day a daily or feedback run processes (see the module docstring).
RUN_DAY = "{{ logical_date | ds }}"
# The last day a training run trains on: the day before its logical date / trigger time.
TRAIN_LAST_DAY = "{{ macros.ds_add((logical_date or dag_run.run_after) | ds, -1) }}"
TRAIN_DAYS = 28
# The mapped ingest task shows each source's name, not its index (the source is the last
# application argument).
INGEST_MAP_INDEX = "{{ task.application_args[-1] }}"
# The sensor re-checks for the day's files this often (reschedule mode: no worker slot held).
FILES_POKE_INTERVAL = timedelta(minutes=5)

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


def default_args(
    retries: int = 2, timeout: timedelta = timedelta(hours=2), notifiers: Sequence[Any] = ()
) -> dict[str, Any]:
    """Task defaults: a stage that fails for a transient reason (executor lost, a Delta
    commit conflict) is retried; every stage replaces whole dates, so a retry is safe. A
    failure logs one line and calls `notifiers` (the DAG files' SMTP notifier)."""
    return {
        "owner": "policylake",
        "retries": retries,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timeout,
        "on_failure_callback": [notify_failure, *notifiers],
    }


# --- what the DAG files read when they are parsed ----------------------------------------


def dag_settings() -> Settings:
    """The settings that shape the DAGs (read once per parse: a small file, no network)."""
    return load_settings()


def start_date(settings: Settings) -> datetime:
    return datetime.combine(settings.airflow.start_date, time(), tzinfo=UTC)


def failure_notification(settings: Settings) -> dict[str, Any] | None:
    """Keyword arguments of the SMTP notifier of failed tasks (rendered with the task's
    context), or None without recipients."""
    cfg = settings.airflow
    if not cfg.notify_emails:
        return None
    return {
        "to": list(cfg.notify_emails),
        "smtp_conn_id": cfg.smtp_conn_id,
        "subject": "policylake task failed: {{ ti.dag_id }}.{{ ti.task_id }} {{ ds }}",
        "html_content": (
            "<p>policylake task failed: dag={{ ti.dag_id }} task={{ ti.task_id }} "
            "map_index={{ ti.map_index }} date={{ ds }} try={{ ti.try_number }}</p>"
            "<p>error: {{ exception }}</p><p>Re-run after the fix: docs/airflow.md, "
            "Failure semantics.</p>"
        ),
    }


def publish_deadline(settings: Settings) -> timedelta | None:
    """From the day's start (the logical date) to when its recommendations are due: the
    configured UTC time of the next day."""
    due = settings.airflow.publish_deadline
    if due is None:
        return None
    hours, minutes = (int(part) for part in due.split(":"))
    return timedelta(days=1, hours=hours, minutes=minutes)


def deadline_kwargs(settings: Settings) -> dict[str, Any]:
    """What the deadline callback needs, fixed when the DAG is parsed (the triggerer has no
    settings of its own)."""
    cfg = settings.airflow
    return {
        "emails": list(cfg.notify_emails),
        "smtp_conn_id": cfg.smtp_conn_id,
        "due": cfg.publish_deadline or "",
    }


async def deadline_missed(
    context: dict[str, Any] | None = None,
    emails: Sequence[str] = (),
    smtp_conn_id: str = "smtp_default",
    due: str = "",
) -> str:
    """Deadline Alert callback (run by the triggerer): the day's recommendations were not
    published in time, so enforcement is acting on yesterday's. One log line an alert rule
    can match, and an e-mail through the SMTP connection when recipients are configured.
    Backfill runs (historical days, due long ago) only log."""
    run = dict((context or {}).get("dag_run") or {})
    day = str(run.get("logical_date") or "?")[:10]
    line = (
        f"policylake deadline missed: dag={run.get('dag_id', '?')} date={day} "
        f"run={run.get('run_id', '?')} state={run.get('state', '?')} "
        f"recommendations due {due} UTC the next day"
    )
    log.error(line)
    if not emails or run.get("run_type") == "backfill":
        return line
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    await SmtpNotifier(
        to=list(emails),
        smtp_conn_id=smtp_conn_id,
        subject=f"policylake: recommendations of {day} not published by {due} UTC",
        html_content=(
            f"<p>{line}</p><p>Enforcement keeps acting on the previous day's recommendations "
            "until the run finishes. docs/airflow.md, Deadline.</p>"
        ),
        context=context or {},
    )
    return line


# --- when a task runs -----------------------------------------------------------------------


def _files_in(folder: str) -> int:
    """Delivered files of one source-day folder: local (or mounted), or an object store
    through fsspec (s3a:// read as s3://); names starting with . or _ are partial or hidden."""
    if "://" not in folder:
        path = Path(folder)
        if not path.is_dir():
            return 0
        return sum(1 for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder.replace("s3a://", "s3://", 1))
    if not fs.isdir(root):
        return 0
    return sum(
        1
        for entry in fs.ls(root, detail=True)
        if entry.get("type") == "file"
        and not str(entry["name"]).rsplit("/", 1)[-1].startswith((".", "_"))
    )


def day_files_ready(day: str, now: datetime | None = None) -> bool:
    """The daily DAG's sensor: True once every configured source has files for `day` and the
    late-file grace after the day has passed, or, with a source still missing, once the
    longest wait has (the run goes on; validate marks what is missing)."""
    settings = load_rooted()
    cfg = settings.airflow
    end = datetime.combine(date.fromisoformat(day), time(), tzinfo=UTC) + timedelta(days=1)
    now = now or datetime.now(UTC)
    raw = settings.paths.raw_root.rstrip("/")
    counts = {source: _files_in(f"{raw}/{source}/{day}") for source in settings.ingest.sources}
    missing = [source for source, n in counts.items() if n == 0]
    summary = ", ".join(f"{source} {n}" for source, n in counts.items())
    if now >= end + timedelta(hours=cfg.late_files_max_wait_hours):
        if missing:
            log.warning(
                "files for %s: %s; still none from %s after %dh: going on without them",
                day, summary, ", ".join(missing), cfg.late_files_max_wait_hours,
            )  # fmt: skip
        return True
    ready = not missing and now >= end + timedelta(minutes=cfg.late_files_grace_minutes)
    log.info("files for %s: %s; %s", day, summary, "ready" if ready else "waiting")
    return ready


def _driver_runs_here(conn_id: str = SPARK_CONN_ID) -> bool:
    """Whether a task's Spark driver runs on this Airflow worker: a local master or client
    deploy mode (the default) of the connection `conn_id`. Then the jars set-up fetched into
    this environment can go on the class path; a driver in cluster mode runs elsewhere."""
    from airflow.sdk import BaseHook  # a task renders this; the DAG file does not import it
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except AirflowNotFoundException:  # the hook then defaults to YARN: not here
        return False
    return str(extra.get("deploy-mode") or "client").strip().lower() == "client"


def _task_local_jars(extra: str) -> list[str] | None:
    wanted = spark_packages(extra.split(","))
    return local_jars(wanted) if _driver_runs_here() else None


def task_packages(extra: str = "") -> str:
    """`--packages` of a Spark task: Delta and the `extra` coordinates, or nothing when
    set-up fetched exactly those jars into this environment and the driver runs here (they
    go as `--jars`: no Ivy resolution, no Ivy report, no network when the task starts)."""
    if _task_local_jars(extra):
        return ""
    return ",".join(spark_packages(extra.split(",")))


def task_jars(extra: str = "") -> str:
    """`--jars` of a Spark task: the locally fetched jars when `task_packages` is empty."""
    return ",".join(_task_local_jars(extra) or [])


# Jinja macros of every policylake DAG (`user_defined_macros`), called when a task renders.
MACROS = {"policylake_packages": task_packages, "policylake_jars": task_jars}
_EXTRA = f"var.value.get('{EXTRA_PACKAGES_VARIABLE}', '')"


def packages_template() -> str:
    """Delta, plus the comma-separated Maven coordinates in the optional Airflow Variable
    `policylake_spark_packages` (e.g. hadoop-aws for an s3a:// lake), rendered per task;
    empty when they are fetched locally (`jars_template`)."""
    return f"{{{{ policylake_packages({_EXTRA}) }}}}"


def jars_template() -> str:
    """The locally fetched jars of the same packages, rendered per task (else empty)."""
    return f"{{{{ policylake_jars({_EXTRA}) }}}}"


def submit_kwargs(settings: Settings | None = None) -> dict[str, Any]:
    """Arguments of every SparkSubmitOperator. Master, deploy mode and queue come from the
    connection `spark_default`; settings from `policylake.yaml` / `POLICYLAKE_*` in the
    worker's environment, which spark-submit passes on to `jobs/cli/submit.py`. Every Spark
    task takes a slot of the pool `airflow.spark_pool` (each is a JVM)."""
    pool = (settings or Settings()).airflow.spark_pool
    return {
        "application": ENTRY_APPLICATION,
        "conn_id": SPARK_CONN_ID,
        "pool": pool,
        "packages": packages_template(),
        "jars": jars_template(),
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
# The weekly upkeep: `policylake maintain` (all tables).
MAINTAIN_ARGS = ("maintain",)


def stage_args(stage: str, *extra: str, day: str = RUN_DAY) -> list[str]:
    """The `policylake` arguments of one task: `run --stage S --date D`, or a job's own."""
    if stage in JOBS:
        return [stage, "--date", day, *extra]
    return ["run", "--stage", stage, "--date", day, *extra]


# `airflow.daily_tasks: one_application`: the night's one Spark task, after the sensor.
NIGHT_TASK = "night"


def night_args(day: str = RUN_DAY) -> list[str]:
    """The `policylake` arguments of the one-application night: every stage of `run`
    (ingest of every configured source .. report) for the day, in one Spark application;
    a blocking source that is not ok stops it right after validate."""
    return ["run", "--date", day, BLOCKING_SOURCES_ARG]


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
