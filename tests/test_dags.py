"""Airflow DAGs: import, parse-time hygiene, structure, the entry point, and `dag.test()` runs.

Airflow reads its configuration when first imported, so every test that imports it goes
through the `airflow_home` fixture (a temporary AIRFLOW_HOME and SQLite database for the
session). The end-to-end tests run the daily DAG with `dag.test()` both ways
(`airflow.daily_tasks`: a task per stage, or the night in one application), each failing at
a blocking source and then succeeding: the one-application night's failure through a real
`spark-submit` launch of `jobs/cli/submit.py`, the other runs with each task's command line
run in this process.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from jobs import orchestration
from jobs.core.config import SOURCES, Settings
from jobs.core.errors import ConfigError
from jobs.core.packages import JARS_DIR_ENV, delta_maven_coordinate, write_manifest
from jobs.governance.decision_files import analyst_decision_files
from jobs.pipeline.runner import STAGES
from tests.conftest import test_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
DAG_IDS = {
    "policylake_daily",
    "policylake_feedback",
    "policylake_training",
    "policylake_maintenance",
}
DAILY_ORDER = ["wait_for_files", "ingest_sources", "ingest", *orchestration.DAILY_STAGES]
LOCAL_SPARK = json.dumps({"conn_type": "spark", "host": "local[2]"})


def _airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_CONN_SPARK_DEFAULT": LOCAL_SPARK,
    }


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """AIRFLOW_HOME for the session; set before the first `import airflow`."""
    if "airflow" in sys.modules:
        pytest.fail("airflow was imported before the airflow_home fixture set AIRFLOW_HOME")
    home = tmp_path_factory.mktemp("airflow-home")
    patch = pytest.MonkeyPatch()
    for key, value in _airflow_env(home).items():
        patch.setenv(key, value)
    yield home
    patch.undo()


@pytest.fixture(scope="session")
def dagbag(airflow_home: Path) -> Any:
    # Airflow 3.3 dropped DagBag(include_examples=...) (apache/airflow#70283); examples are
    # a bundle gated by [core] load_examples, off in airflow_home.
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """The session's SQLite metadata database, migrated (what `dag.test()` needs)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, **_airflow_env(airflow_home)},
        timeout=300,
    )
    return airflow_home


# --- import and parse time -------------------------------------------------------------


def test_dagbag_imports_the_four_dags_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS


PARSE_PROBE = textwrap.dedent(
    """
    import json, runpy, sys
    from pathlib import Path

    sys.path = [p for p in sys.path if p not in ("", ".")]  # as in the DAG processor
    # What parsing costs anyway (Airflow, the providers, croniter's platform probe).
    import croniter, airflow.sdk, airflow.providers.apache.spark.operators.spark_submit
    import airflow.providers.smtp.notifications.smtp, airflow.providers.standard.decorators.sensor
    import airflow.providers.standard.decorators.python, airflow.providers.standard.decorators.short_circuit

    allowed = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    allowed += [Path(sys.argv[1]).resolve() / d for d in ("jobs", "dags")]
    allowed.append(Path(sys.argv[2]).resolve())  # the settings file: the DAGs' dates and limits
    touched = []

    def audit(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "subprocess.Popen", "os.system"):
            touched.append(f"{event} {args[:2]!r}")
        elif event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, Path)):
            path = Path(args[0].decode() if isinstance(args[0], bytes) else args[0]).resolve()
            if not any(path.is_relative_to(root) for root in allowed):
                touched.append(f"{event} {path}")

    sys.addaudithook(audit)
    for dag_file in sorted((Path(sys.argv[1]) / "dags").glob("*.py")):
        runpy.run_path(str(dag_file), run_name=dag_file.stem)
    heavy = ("pyspark", "py4j", "delta", "pandas", "great_expectations", "mlflow", "sklearn")
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
    print(json.dumps({"touched": touched, "heavy": loaded}))
    """
)


def test_parsing_the_dags_imports_no_spark_and_touches_no_files(
    airflow_home: Path, tmp_path: Path
) -> None:
    """In a fresh interpreter, as the DAG processor does: no pyspark (or any other heavy
    library) is imported, and nothing outside the installed code and the settings file is
    opened, listed or connected to (no lake, no raw folder, no network)."""
    config = tmp_path / "policylake.yaml"
    config.write_text("airflow:\n  start_date: 2026-11-01\npaths:\n  lake_root: /nonexistent\n")
    env = {**os.environ, **_airflow_env(airflow_home), "POLICYLAKE_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(REPO), str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=airflow_home,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"touched": [], "heavy": []}


def test_delta_coordinate_matches_the_installed_distributions() -> None:
    from importlib.metadata import version

    spark_minor = ".".join(version("pyspark").split(".")[:2])
    assert delta_maven_coordinate() == (
        f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"
    )


# --- structure -------------------------------------------------------------------------


def _submit_tasks(dag: Any) -> list[Any]:
    return [t for t in dag.tasks if t.task_type == "SparkSubmitOperator"]


def _arg(task: Any, name: str) -> Any:
    """An operator argument, of a plain or a mapped (`.partial(...)`) operator."""
    if hasattr(task, "partial_kwargs"):
        return task.partial_kwargs[name]
    return getattr(task, name) if hasattr(task, name) else getattr(task, f"_{name}")


def _args_of(task: Any) -> list[list[str]]:
    """Every `application_args` a task runs with (mapped ingest: what its plan returns)."""
    if hasattr(task, "expand_input"):
        return [list(a) for a in orchestration.ingest_plan(orchestration.RUN_DAY)]
    return [list(task.application_args)]


def test_daily_dag_runs_the_stages_in_order(dagbag: Any) -> None:
    dag = dagbag.dags["policylake_daily"]
    assert {t.task_id for t in dag.tasks} == set(DAILY_ORDER)
    for upstream, downstream in itertools.pairwise(DAILY_ORDER):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}, upstream
        assert dag.get_task(downstream).upstream_task_ids == {upstream}, downstream
    # downstream tasks never run after a failed upstream task
    assert all(t.trigger_rule == "all_success" for t in dag.tasks)


def test_daily_ingest_is_mapped_over_the_configured_sources(
    dagbag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = dagbag.dags["policylake_daily"]
    ingest = dag.get_task("ingest")
    assert hasattr(ingest, "expand_input"), "ingest must use dynamic task mapping"
    mapped = ingest.expand_input.value["application_args"]
    assert mapped.operator.task_id == "ingest_sources"
    plan = dag.get_task("ingest_sources")
    assert plan.python_callable is orchestration.ingest_plan
    assert plan.op_kwargs == {"day": orchestration.RUN_DAY}

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POLICYLAKE_CONFIG", raising=False)
    monkeypatch.delenv("POLICYLAKE__INGEST__SOURCES", raising=False)
    day = ["run", "--stage", "ingest", "--date", "2026-10-05", "--source"]
    assert orchestration.ingest_plan("2026-10-05") == [[*day, s] for s in SOURCES]
    monkeypatch.setenv("POLICYLAKE__INGEST__SOURCES", "[sshd, idp]")
    assert orchestration.ingest_plan("2026-10-05") == [[*day, "sshd"], [*day, "idp"]]


def test_every_spark_task_submits_the_entry_point_for_its_day(dagbag: Any) -> None:
    expected_day = {
        "policylake_daily": orchestration.RUN_DAY,
        "policylake_feedback": orchestration.RUN_DAY,
        "policylake_training": orchestration.TRAIN_LAST_DAY,
    }
    delta = delta_maven_coordinate()
    for dag_id in DAG_IDS:
        dag = dagbag.dags[dag_id]
        tasks = _submit_tasks(dag)
        assert tasks, dag_id
        for task in tasks:
            assert _arg(task, "conn_id") == "spark_default"
            assert _arg(task, "pool") == "policylake_spark"  # one slot per JVM
            if task.task_id == "maintain":  # the lake-wide job: every table, no date
                assert _args_of(task) == [["maintain"]]
                continue
            assert Path(_arg(task, "application")) == REPO / "jobs" / "cli" / "submit.py"
            assert Path(_arg(task, "application")).is_file()
            # Delta's jars: rendered per task (test_spark_tasks_take_the_jars_set_up_fetched...)
            rendered = _render_dependencies(task, {})
            assert delta in rendered[0] or "delta-spark" in rendered[1], rendered
            assert _arg(task, "conf")["spark.sql.session.timeZone"] == "UTC"
            for args in _args_of(task):
                stage = {"ingest_analyst_decisions": "feedback"}.get(task.task_id, task.task_id)
                if stage in ("train", "feedback"):  # jobs of their own: `policylake <job>`
                    assert args[:3] == [stage, "--date", expected_day[dag_id]], task.task_id
                else:  # a pipeline stage: `policylake run --stage S --date D`
                    assert args[:3] == ["run", "--stage", stage]
                    assert args[3:5] == ["--date", expected_day[dag_id]], task.task_id


def test_tasks_have_retries_timeouts_and_the_failure_callback(dagbag: Any) -> None:
    for dag_id in DAG_IDS:
        dag = dagbag.dags[dag_id]
        assert dag.dagrun_timeout is not None
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert orchestration.notify_failure in callbacks, task.task_id
            assert task.execution_timeout is not None, task.task_id
            if "Sensor" not in task.task_type:  # waiting is not failing; no retry
                assert task.retries >= 1, task.task_id
                assert task.retry_delay >= timedelta(minutes=1)


def test_schedules_catchup_tags_and_concurrency(dagbag: Any) -> None:
    daily = dagbag.dags["policylake_daily"]
    feedback = dagbag.dags["policylake_feedback"]
    training = dagbag.dags["policylake_training"]
    maintenance = dagbag.dags["policylake_maintenance"]
    for dag in (daily, feedback):
        assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
        assert dag.timetable.expression == "0 0 * * *"  # one UTC day per run
    for dag in (daily, feedback, training, maintenance):
        # a new deployment runs the latest interval only; history is a backfill
        assert dag.catchup is False
        assert dag.max_active_runs == 1
        assert dag.start_date == datetime(2026, 10, 1, tzinfo=UTC)
        assert dag.tags == {"policylake", dag.dag_id.removeprefix("policylake_")}
    assert type(training.timetable).__name__ == "AssetOrTimeSchedule"
    assert training.timetable.timetable.expression == "0 6 * * 0"
    assert maintenance.timetable.expression == "0 3 * * 6"  # weekly, after Friday's night
    assert {daily.get_task(t).depends_on_past for t in ("baselines", "score")} == {True}
    assert daily.get_task("validate").depends_on_past is False


def test_start_date_catchup_limits_and_schedule_come_from_the_settings(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    for key, value in {
        "START_DATE": "2026-11-15",
        "CATCHUP": "true",
        "SPARK_POOL": "spark_cluster",
        "MAX_PARALLEL_INGEST": "4",
        "PUBLISH_DEADLINE": "04:30",
    }.items():
        monkeypatch.setenv(f"POLICYLAKE__AIRFLOW__{key}", value)
    monkeypatch.setenv("POLICYLAKE__MAINTENANCE__SCHEDULE", "0 2 * * 0")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    daily = bag.dags["policylake_daily"]
    assert daily.start_date == datetime(2026, 11, 15, tzinfo=UTC) and daily.catchup is True
    assert bag.dags["policylake_feedback"].catchup is True
    assert _arg(daily.get_task("score"), "pool") == "spark_cluster"
    assert daily.get_task("ingest").partial_kwargs["max_active_tis_per_dagrun"] == 4
    (alert,) = daily.deadline if isinstance(daily.deadline, list) else [daily.deadline]
    assert type(alert.reference).__name__ == "DagRunLogicalDateDeadline"
    assert alert.interval == timedelta(days=1, hours=4, minutes=30)  # D+1 04:30 UTC
    assert alert.callback.path == "jobs.orchestration.deadline_missed"
    assert alert.callback.kwargs == {"emails": [], "smtp_conn_id": "smtp_default", "due": "04:30"}
    assert bag.dags["policylake_maintenance"].timetable.expression == "0 2 * * 0"
    monkeypatch.setenv("POLICYLAKE__AIRFLOW__START_DATE", "not a date")
    broken = DagBag(dag_folder=str(DAGS / "policylake_daily.py"))
    assert "airflow.start_date" in " ".join(broken.import_errors.values())


def _daily_dag(monkeypatch: pytest.MonkeyPatch, **airflow: str) -> Any:
    """The daily DAG parsed with `POLICYLAKE__AIRFLOW__<KEY>` overrides."""
    from airflow.dag_processing.dagbag import DagBag

    for key, value in airflow.items():
        monkeypatch.setenv(f"POLICYLAKE__AIRFLOW__{key.upper()}", value)
    bag = DagBag(dag_folder=str(DAGS / "policylake_daily.py"))
    assert bag.import_errors == {}
    return bag.dags["policylake_daily"]


def test_one_application_runs_the_night_as_one_task_after_the_sensor(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daily = _daily_dag(monkeypatch, daily_tasks="one_application", spark_pool="spark_cluster")
    assert {t.task_id for t in daily.tasks} == {"wait_for_files", "night"}
    night = daily.get_task("night")
    assert night.upstream_task_ids == {"wait_for_files"} and night.downstream_task_ids == set()
    assert night.task_type == "SparkSubmitOperator" and night.trigger_rule == "all_success"
    # every stage of `run` for the run's day, the blocking sources as validate takes them
    args = ["run", "--date", orchestration.RUN_DAY, orchestration.BLOCKING_SOURCES_ARG]
    assert night.application_args == args
    assert night.application == orchestration.ENTRY_APPLICATION
    assert _arg(night, "pool") == "spark_cluster" and night.depends_on_past is True
    assert night.retries == 2 and night.execution_timeout == timedelta(hours=8)
    assert orchestration.notify_failure in night.on_failure_callback
    assert {a.uri for a in night.outlets} == {
        uri for uris in orchestration.DAILY_OUTLETS.values() for uri in uris
    }
    # the default stays a task per stage; an unknown mode is an import error naming the key
    assert {t.task_id for t in _daily_dag(monkeypatch, daily_tasks="per_stage").tasks} == set(
        DAILY_ORDER
    )
    monkeypatch.setenv("POLICYLAKE__AIRFLOW__DAILY_TASKS", "one_jvm")
    from airflow.dag_processing.dagbag import DagBag

    broken = DagBag(dag_folder=str(DAGS / "policylake_daily.py"))
    assert "airflow.daily_tasks" in " ".join(broken.import_errors.values())


def test_daily_limits_map_names_sensor_deadline_and_taskflow(dagbag: Any) -> None:
    daily = dagbag.dags["policylake_daily"]
    ingest = daily.get_task("ingest")
    assert ingest.partial_kwargs["max_active_tis_per_dagrun"] == 2
    assert ingest.partial_kwargs["map_index_template"] == "{{ task.application_args[-1] }}"
    wait = daily.get_task("wait_for_files")
    assert wait.mode == "reschedule" and wait.python_callable is orchestration.day_files_ready
    assert wait.op_kwargs == {"day": orchestration.RUN_DAY}
    assert wait.poke_interval == 300
    # TaskFlow: the Python callables are decorated tasks, not classic operators
    assert daily.get_task("ingest_sources").task_type == "_PythonDecoratedOperator"
    feedback = dagbag.dags["policylake_feedback"].get_task("analyst_files_arrived")
    assert feedback.task_type == "_ShortCircuitDecoratedOperator"
    assert feedback.python_callable is orchestration.analyst_decisions_arrived
    assert not daily.deadline  # opt-in: airflow.publish_deadline (docs/airflow.md)


def test_assets_connect_feedback_to_training(dagbag: Any) -> None:
    def uris(task: Any) -> set[str]:
        return {a.uri for a in task.outlets}

    daily = dagbag.dags["policylake_daily"]
    assert uris(daily.get_task("score")) == {orchestration.ASSET_SESSION_SCORES}
    assert uris(daily.get_task("recommend")) == {orchestration.ASSET_RECOMMENDATIONS}
    assert uris(daily.get_task("metrics")) == {orchestration.ASSET_METRICS}
    feedback = dagbag.dags["policylake_feedback"]
    assert [t.task_id for t in feedback.tasks] == [
        "analyst_files_arrived",
        "ingest_analyst_decisions",
    ]
    assert orchestration.ASSET_ANALYST_DECISIONS in uris(
        feedback.get_task("ingest_analyst_decisions")
    )
    training = dagbag.dags["policylake_training"]
    condition = training.timetable.asset_condition
    assert condition.uri == orchestration.ASSET_ANALYST_DECISIONS
    assert uris(training.get_task("train")) == {orchestration.ASSET_MODEL}


class _Variables:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)


@pytest.mark.parametrize(
    ("context", "day", "last_training_day"),
    [
        # scheduled/backfill daily run: logical date = data interval start
        ({"logical_date": datetime(2026, 10, 5, tzinfo=UTC)}, "2026-10-05", "2026-10-04"),
        # weekly training run at Sunday 06:00 trains through Saturday
        ({"logical_date": datetime(2026, 10, 11, 6, tzinfo=UTC)}, "2026-10-11", "2026-10-10"),
        # asset-triggered training run: no logical date, the trigger time decides
        (
            {"logical_date": None, "run_after": datetime(2026, 10, 14, 0, 30, tzinfo=UTC)},
            "None",
            "2026-10-13",
        ),
    ],
)
def test_date_templates_render_from_the_run_never_the_clock(
    dagbag: Any, context: dict[str, Any], day: str, last_training_day: str
) -> None:
    from airflow.sdk import macros

    task = dagbag.dags["policylake_daily"].get_task("validate")

    class DagRun:
        run_after = context.get("run_after")

    ctx = {
        "logical_date": context["logical_date"],
        "dag_run": DagRun(),
        "macros": macros,
        "params": {"blocking_sources": ""},
        "var": {"value": _Variables({})},
    }
    assert task.render_template(orchestration.RUN_DAY, ctx) == day
    assert task.render_template(orchestration.TRAIN_LAST_DAY, ctx) == last_training_day


def test_blocking_sources_come_from_the_run_conf_else_the_variable(dagbag: Any) -> None:
    task = dagbag.dags["policylake_daily"].get_task("validate")
    arg = orchestration.BLOCKING_SOURCES_ARG

    def render(param: str, variables: dict[str, str]) -> str:
        ctx = {"params": {"blocking_sources": param}, "var": {"value": _Variables(variables)}}
        return str(task.render_template(arg, ctx))

    assert render("", {}) == "--blocking-sources="
    assert render("", {"policylake_blocking_sources": "idp"}) == "--blocking-sources=idp"
    assert render("all", {"policylake_blocking_sources": "idp"}) == "--blocking-sources=all"


def _render_dependencies(task: Any, variables: dict[str, str]) -> tuple[str, str]:
    """(--packages, --jars) of `task` as Airflow renders them, with the DAG's macros."""
    context = {"var": {"value": _Variables(variables)}, **task.dag.user_defined_macros}
    return (
        str(task.render_template(_arg(task, "packages"), context)),
        str(task.render_template(_arg(task, "jars"), context)),
    )


def test_spark_tasks_take_the_jars_set_up_fetched_or_else_the_packages(
    dagbag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = delta_maven_coordinate()
    aws = "org.apache.hadoop:hadoop-aws:3.4.1"
    extra = {"policylake_spark_packages": f" {aws} ,"}
    fetched = [tmp_path / "delta-spark.jar", tmp_path / "delta-storage.jar"]
    for jar in fetched:
        jar.write_bytes(b"PK")
    write_manifest(tmp_path, [delta], fetched)
    monkeypatch.setenv(JARS_DIR_ENV, str(tmp_path))
    for dag_id in sorted(DAG_IDS):
        dag = dagbag.dags[dag_id]
        for task in _submit_tasks(dag):
            # local master (the tests' connection): set-up's jars, no Ivy resolution
            assert _render_dependencies(task, {}) == ("", ",".join(str(j) for j in fetched))
            # a package set-up did not fetch: every coordinate goes through --packages
            assert _render_dependencies(task, extra) == (f"{delta},{aws}", "")
    task = dagbag.dags["policylake_daily"].get_task("validate")
    # a driver in cluster deploy mode runs elsewhere: the worker's files are not its files
    cluster = {"conn_type": "spark", "host": "spark://m:7077", "extra": {"deploy-mode": "cluster"}}
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(cluster))
    assert _render_dependencies(task, {}) == (delta, "")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", LOCAL_SPARK)
    # no manifest, or one missing a jar: Ivy as before
    fetched[1].unlink()
    assert _render_dependencies(task, {}) == (delta, "")
    monkeypatch.setenv(JARS_DIR_ENV, str(tmp_path / "nowhere"))
    assert _render_dependencies(task, {}) == (delta, "")


def test_failure_callback_logs_one_matchable_line(caplog: pytest.LogCaptureFixture) -> None:
    class TI:
        dag_id, task_id, map_index, try_number = "policylake_daily", "validate", -1, 3

    with caplog.at_level("ERROR", logger="policylake.airflow"):
        orchestration.notify_failure(
            {"task_instance": TI(), "ds": "2026-10-02", "exception": RuntimeError("gate")}
        )
    assert caplog.messages == [
        "policylake task failed: dag=policylake_daily task=validate map_index=-1 "
        "date=2026-10-02 try=3 error=gate"
    ]


# --- notifications, the deadline and the files sensor (no JVM) --------------------------


def test_failed_tasks_are_mailed_through_the_smtp_connection(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With recipients configured, every task's failure callbacks include the SMTP provider's
    notifier; called as Airflow calls it, it sends through the configured connection."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from tests.smtp_sink import SmtpSink

    monkeypatch.setenv("POLICYLAKE__AIRFLOW__NOTIFY_EMAILS", "[soc@example.test]")
    monkeypatch.setenv("POLICYLAKE__AIRFLOW__SMTP_CONN_ID", "policylake_smtp")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            assert orchestration.notify_failure in callbacks, task.task_id
            assert any(isinstance(c, SmtpNotifier) for c in callbacks), task.task_id
    validate = bag.dags["policylake_daily"].get_task("validate")
    notifier = next(c for c in validate.on_failure_callback if isinstance(c, SmtpNotifier))

    class TI:
        dag_id, task_id, map_index, try_number = "policylake_daily", "validate", -1, 3

    with SmtpSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_POLICYLAKE_SMTP", sink.connection_uri())
        notifier(
            {
                "ti": TI(),
                "ds": "2026-10-02",
                "exception": RuntimeError("gate failed"),
                "dag": validate.dag,
            }
        )
    (mail,) = sink.messages
    assert sink.recipients == [["soc@example.test"]]
    assert mail["Subject"] == "policylake task failed: policylake_daily.validate 2026-10-02"
    assert "gate failed" in mail.get_payload()[0].get_payload(decode=True).decode()


def test_a_missed_deadline_logs_and_mails_from_the_triggerer(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The deadline callback, run the way the triggerer runs it (`CallbackTrigger`), with the
    context the scheduler gives it; backfill runs only log."""
    import asyncio

    from airflow.triggers.callback import CallbackTrigger

    from tests.smtp_sink import SmtpSink

    def run(kind: str) -> list[Any]:
        context = {
            "dag_run": {"dag_id": "policylake_daily", "run_id": f"{kind}__2026-10-05",
                        "logical_date": "2026-10-05T00:00:00Z", "state": "running", "run_type": kind},
            "deadline": {"id": "d1", "deadline_time": "2026-10-06T06:00:00Z"},
        }  # fmt: skip
        kwargs = {"emails": ["soc@example.test"], "smtp_conn_id": "policylake_smtp", "due": "06:00"}
        trigger = CallbackTrigger(
            "jobs.orchestration.deadline_missed", {**kwargs, "context": context}
        )

        async def events() -> list[Any]:
            return [e async for e in trigger.run()]

        return asyncio.run(events())

    with SmtpSink() as sink, caplog.at_level("ERROR", logger="policylake.airflow"):
        monkeypatch.setenv("AIRFLOW_CONN_POLICYLAKE_SMTP", sink.connection_uri())
        scheduled = run("scheduled")
        backfill = run("backfill")
    assert [e.payload["state"] for e in scheduled] == ["running", "success"]
    assert [e.payload["state"] for e in backfill] == ["running", "success"]
    (mail,) = sink.messages  # the backfill run only logged
    assert mail["Subject"] == "policylake: recommendations of 2026-10-05 not published by 06:00 UTC"
    assert caplog.messages[0] == (
        "policylake deadline missed: dag=policylake_daily date=2026-10-05 "
        "run=scheduled__2026-10-05 state=running recommendations due 06:00 UTC the next day"
    )


def test_the_sensor_waits_for_every_sources_files_then_the_grace_at_most_the_longest_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLICYLAKE_CONFIG", raising=False)
    monkeypatch.setenv("POLICYLAKE_WORKDIR", str(tmp_path))
    monkeypatch.setenv("POLICYLAKE__INGEST__SOURCES", "[idp, sshd]")
    day = "2026-10-05"
    end = datetime(2026, 10, 6, tzinfo=UTC)
    (tmp_path / "raw" / "idp" / day).mkdir(parents=True)
    (tmp_path / "raw" / "idp" / day / "okta.jsonl").write_text("{}\n")
    (tmp_path / "raw" / "sshd" / day).mkdir(parents=True)
    (tmp_path / "raw" / "sshd" / day / "_auth.log.partial").write_text("x\n")  # still arriving
    ready = orchestration.day_files_ready
    assert ready(day, end + timedelta(hours=3)) is False  # sshd has no complete file yet
    assert ready(day, end + timedelta(hours=8)) is True  # the longest wait: go on without it
    (tmp_path / "raw" / "sshd" / day / "auth.log").write_text("x\n")
    assert ready(day, end + timedelta(minutes=30)) is False  # within the late-file grace
    assert ready(day, end + timedelta(hours=2)) is True
    monkeypatch.setenv("POLICYLAKE__AIRFLOW__LATE_FILES_GRACE_MINUTES", "0")
    assert ready(day, end) is True


def test_the_sensor_lists_an_object_store_through_fsspec(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/lake-raw/idp/2026-10-05/okta.jsonl", b"{}\n")
    monkeypatch.delenv("POLICYLAKE_CONFIG", raising=False)
    monkeypatch.setenv("POLICYLAKE__PATHS__RAW_ROOT", "memory://lake-raw")
    monkeypatch.setenv("POLICYLAKE__INGEST__SOURCES", "[idp, sshd]")
    late = datetime(2026, 10, 6, 3, tzinfo=UTC)
    assert orchestration.day_files_ready("2026-10-05", late) is False  # no sshd files
    fs.pipe("/lake-raw/sshd/2026-10-05/auth.log", b"x\n")
    assert orchestration.day_files_ready("2026-10-05", late) is True


# --- the analyst drop folder (no JVM) ---------------------------------------------------


def test_analyst_decision_files_of_a_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "analyst_decisions" / "2026-10-02"
    folder.mkdir(parents=True)
    for name in ("b.jsonl", "a.csv", ".a.csv.swp", "_partial.csv", "notes.txt"):
        (folder / name).write_text("x")
    drop = str(tmp_path / "analyst_decisions")
    assert [p.name for p in analyst_decision_files(drop, "2026-10-02")] == ["a.csv", "b.jsonl"]
    assert analyst_decision_files(drop, "2026-10-03") == []
    with pytest.raises(ConfigError, match="local or mounted folder"):
        analyst_decision_files("s3a://lake/analyst_decisions", "2026-10-02")
    monkeypatch.delenv("POLICYLAKE_CONFIG", raising=False)
    monkeypatch.chdir(folder)  # relative paths must not resolve against the cwd
    monkeypatch.setenv("POLICYLAKE_WORKDIR", str(tmp_path))
    assert orchestration.analyst_decisions_arrived("2026-10-02") is True
    assert orchestration.analyst_decisions_arrived("2026-10-03") is False


# --- end to end: dag.test() with real spark-submit launches ----------------------------

# Generated scenarios land on the second day; the first gives baselines their history.
DAY1, DAY = date(2026, 10, 1), date(2026, 10, 2)
# Two sources keep a run small and still exercise the mapped ingest writing one ops.ingest_log.
E2E_SOURCES = ["idp", "sshd"]


@dataclass
class DagRuns:
    """One way of running the daily DAG (`airflow.daily_tasks`) on its own lake: table
    versions before, after the failed run, after the re-run, and the task states."""

    settings: Settings
    before: dict[str, int]
    failed_state: str
    failed_tis: dict[str, str]
    after_failure: dict[str, int]
    failed_source_status: dict[str, str]
    failed_journal: dict[str, str]  # the day's stage journal after the failed run
    rerun_state: str
    rerun_tis: dict[str, str]
    after_rerun: dict[str, int]


@dataclass
class DailyRuns:
    """What `daily_runs` saw: the reference lake and each way of running the DAG."""

    reference: Settings
    reference_day_rows: dict[str, int]  # rows of DAY per table in the reference lake
    runs: dict[str, DagRuns]  # per_stage, one_application


def _settings_yaml(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=True))
    return path


def _tables(lake_root: str) -> list[str]:
    root = Path(lake_root)
    return sorted(
        f"{layer.name}.{table.name}"
        for layer in root.iterdir()
        if layer.is_dir()
        for table in layer.iterdir()
        if (table / "_delta_log").is_dir()
    )


def _versions(lake_root: str) -> dict[str, int]:
    """The latest Delta version of every table (from the log, no Spark job)."""
    versions = {}
    for table in _tables(lake_root):
        log = Path(lake_root) / table.replace(".", "/", 1) / "_delta_log"
        versions[table] = max(int(p.stem) for p in log.glob("*.json"))
    return versions


def _state(state: Any) -> str:
    return str(getattr(state, "value", state))


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): _state(ti.state)
            for ti in tis
        }


def _dag_test(
    dag: Any, day: date, conf: dict[str, Any] | None = None
) -> tuple[str, dict[str, str]]:
    run = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC), run_conf=conf)
    return _state(run.state), _task_states(dag.dag_id, run.run_id)


def _submit_in_process(hook: Any, application: str = "", **_: Any) -> None:
    """`SparkSubmitHook.submit` run in this process: the command the hook would launch is
    built (and must launch the entry point with the task's arguments), then the entry point's
    command line runs here, on the session's Spark, and a non-zero exit fails the task as
    spark-submit's would. The failed run above goes through real `spark-submit` launches;
    a cold JVM per task for the re-run's ten tasks would add nothing but minutes."""
    from airflow.exceptions import AirflowException

    from jobs.cli.app import app, run_cli

    args = list(hook._application_args)
    command = hook._build_spark_submit_command(application)
    assert application.endswith("submit.py") and command[-len(args) - 1 :] == [application, *args]
    code = run_cli(app, args)
    if code != 0:
        raise AirflowException(f"policylake {' '.join(args)} exited with {code}")


@contextmanager
def _in_process(on: bool = True) -> Iterator[None]:
    """Spark tasks run their command line in this process (`_submit_in_process`) while on."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    with pytest.MonkeyPatch.context() as patch:
        if on:
            patch.setattr(SparkSubmitHook, "submit", _submit_in_process)
        yield


@pytest.fixture(scope="module")
def daily_runs(
    spark: Any,
    dagbag: Any,
    airflow_db: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DailyRuns]:
    """Two generated days. The reference lake runs `run_stages` for DAY1, then DAY. Each way
    of running the daily DAG (`airflow.daily_tasks`) gets a lake that starts as a copy of
    the reference after DAY1, then `dag.test()` runs DAY twice: with the idp file corrupted
    and idp blocking (validate must fail and stop what follows, leaving silver and gold
    alone), then with the file repaired (must succeed). The one-application night fails
    through a real `spark-submit` launch; the other runs' tasks run their command lines in
    this process (`_submit_in_process`)."""
    from airflow.dag_processing.dagbag import DagBag

    from jobs import generate
    from jobs.core.context import RunContext
    from jobs.pipeline.journal import StageJournal, journal_key
    from jobs.pipeline.runner import run_stages

    base = tmp_path_factory.mktemp("dag-e2e")
    gen = base / "gen"
    generate.generate_telemetry(gen, DAY1, days=2, users=12, seed=7, workers=1)
    shared = {
        "raw_root": str(gen / "raw"),
        "reference_root": str(gen / "reference"),
        "ground_truth": str(gen / "ground_truth.jsonl"),
    }
    ingest = {"sources": E2E_SOURCES}
    reference = test_settings(base / "reference", paths=shared, ingest=ingest)
    ref_ctx = RunContext(spark, reference)
    list(run_stages(ref_ctx, list(STAGES), [DAY1]))
    lakes = {}
    for mode in ("per_stage", "one_application"):
        lakes[mode] = test_settings(
            base / mode, paths=shared, ingest=ingest, airflow={"daily_tasks": mode}
        )
        shutil.copytree(reference.paths.lake_root, lakes[mode].paths.lake_root)
    list(run_stages(ref_ctx, list(STAGES), [DAY]))
    day_rows = {
        t: ref_ctx.lake.read_dates(t, [DAY]).count() for t in _tables(reference.paths.lake_root)
    }

    patch = pytest.MonkeyPatch()
    patch.delenv("POLICYLAKE_WORKDIR", raising=False)
    bin_dir = str(Path(sys.executable).parent)  # spark-submit of the pyspark installation
    patch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    pyspark_spec = find_spec("pyspark")
    assert pyspark_spec is not None and pyspark_spec.origin is not None
    patch.setenv("SPARK_HOME", str(Path(pyspark_spec.origin).parent))
    # A broken delivery: 10% of the idp lines unparseable fails its critical `parser` check.
    idp_file = next((gen / "raw" / "idp" / DAY.isoformat()).glob("*.jsonl"))
    original = idp_file.read_bytes()
    broken = original + b"{truncated okta event\n" * max(original.count(b"\n") // 10, 10)
    runs = {}
    for mode, dag_settings in lakes.items():
        # the DAG file reads the settings when parsed, its tasks when they run
        patch.setenv("POLICYLAKE_CONFIG", str(_settings_yaml(dag_settings, base / f"{mode}.yaml")))
        dag = DagBag(dag_folder=str(DAGS / "policylake_daily.py")).dags["policylake_daily"]
        for task in dag.tasks:
            task.retries = 0  # a retry would wait retry_delay; the failure is the point here
        before = _versions(dag_settings.paths.lake_root)
        idp_file.write_bytes(broken)
        try:
            with _in_process(on=mode != "one_application"):  # one real spark-submit
                failed_state, failed_tis = _dag_test(dag, DAY, {"blocking_sources": "idp"})
            after_failure = _versions(dag_settings.paths.lake_root)
            lake = RunContext(spark, dag_settings).lake
            status = {
                r["source"]: r["status"]
                for r in lake.read_dates("ops.source_status", [DAY]).collect()
            }
            journal = StageJournal(lake)
            keys = [*STAGES, *(journal_key("ingest", s) for s in E2E_SOURCES)]
            journalled = {k: r.status for k in keys if (r := journal.get(k, DAY)) is not None}
        finally:
            idp_file.write_bytes(original)  # the vendor re-delivers the file
        with _in_process():
            rerun_state, rerun_tis = _dag_test(dag, DAY)
        runs[mode] = DagRuns(
            dag_settings,
            before,
            failed_state,
            failed_tis,
            after_failure,
            status,
            journalled,
            rerun_state,
            rerun_tis,
            _versions(dag_settings.paths.lake_root),
        )
    yield DailyRuns(reference, day_rows, runs)
    patch.undo()


# What a failed validate has written: the day's evidence, nothing downstream of it.
WRITTEN_BY_A_FAILED_VALIDATE = {
    "bronze.idp",
    "bronze.sshd",
    "ops.ingest_log",
    "ops.dq_results",
    "ops.source_status",
}


@pytest.mark.slow
def test_failed_gate_stops_downstream_tasks_and_leaves_the_lake_consistent(
    daily_runs: DailyRuns,
) -> None:
    runs = daily_runs.runs["per_stage"]
    assert runs.failed_state == "failed"
    assert runs.failed_source_status == {"idp": "degraded", "sshd": "ok"}
    for task in ("wait_for_files", "ingest_sources", "ingest[0]", "ingest[1]"):
        assert runs.failed_tis[task] == "success", task
    assert runs.failed_tis["validate"] == "failed"
    for stage in orchestration.DAILY_STAGES[1:]:
        assert runs.failed_tis[stage] == "upstream_failed", stage
    # ingest and validate replaced the day (the evidence: bronze rows, dq results) ...
    written = {t for t, v in runs.after_failure.items() if v > runs.before[t]}
    assert written == WRITTEN_BY_A_FAILED_VALIDATE
    # ... and nothing else changed: silver and gold keep the last good run's rows
    assert runs.after_failure.keys() == runs.before.keys()


@pytest.mark.slow
def test_one_application_night_stops_after_a_failed_gate_in_its_real_spark_submit(
    daily_runs: DailyRuns,
) -> None:
    """The night's one `spark-submit` stops right after validate: the stages after it never
    start, so the lake holds exactly what a failed validate task leaves."""
    runs = daily_runs.runs["one_application"]
    assert runs.failed_state == "failed"
    assert runs.failed_tis == {"wait_for_files": "success", "night": "failed"}
    assert runs.failed_source_status == {"idp": "degraded", "sshd": "ok"}
    written = {t for t, v in runs.after_failure.items() if v > runs.before[t]}
    assert written == WRITTEN_BY_A_FAILED_VALIDATE
    assert runs.after_failure.keys() == runs.before.keys()
    # the journal: every source's ingest and validate finished, nothing after them started
    assert runs.failed_journal == {
        "ingest@idp": "finished",
        "ingest@sshd": "finished",
        "validate": "finished",
    }
    # the per-stage DAG's failed validate task leaves the same record
    assert daily_runs.runs["per_stage"].failed_journal == runs.failed_journal


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["per_stage", "one_application"])
def test_daily_dag_rerun_succeeds_and_writes_what_run_stages_writes(
    spark: Any, daily_runs: DailyRuns, mode: str
) -> None:
    from pyspark.testing import assertDataFrameEqual

    from jobs.core.lake import Lake

    runs = daily_runs.runs[mode]
    assert runs.rerun_state == "success"
    assert set(runs.rerun_tis.values()) == {"success"}
    tasks = len(DAILY_ORDER) - 1 + len(E2E_SOURCES) if mode == "per_stage" else 2
    assert len(runs.rerun_tis) == tasks
    ours, theirs = runs.settings.paths, daily_runs.reference.paths
    tables = _tables(ours.lake_root)
    assert tables == _tables(theirs.lake_root)
    assert {"silver.events", "gold.session_scores", "gold.policy_recommendations"} <= set(tables)
    assert "gold.metrics_daily" in tables
    # the DAG's tasks committed every table that has rows for the day (a write that changes
    # nothing, e.g. a MERGE of no rows, may not commit), and hold what run_stages wrote
    day_rows = daily_runs.reference_day_rows
    assert {"gold.policy_recommendations", "gold.baselines"} <= {
        t for t, n in day_rows.items() if n
    }
    assert [t for t in tables if day_rows[t] and runs.after_rerun[t] <= runs.after_failure[t]] == []
    lake, ref = Lake(spark, ours.lake_root), Lake(spark, theirs.lake_root)
    for table in tables:
        assertDataFrameEqual(
            _without_workdir(lake.read(table), ours.lake_root, theirs.lake_root),
            _without_workdir(ref.read(table), ours.lake_root, theirs.lake_root),
        )
    exported = Path(DAY.isoformat()) / "policy_recommendations.jsonl"
    assert (Path(ours.exports_dir) / exported).read_bytes() == (
        Path(theirs.exports_dir) / exported
    ).read_bytes()


def _without_workdir(df: DataFrame, *lake_roots: str) -> DataFrame:
    """Text columns with the work directories of `lake_roots` (each lake root's parent) as
    `<workdir>`: a reason may name a path under one (`no MLflow store at <workdir>/mlruns`),
    and a day the DAG's lake took over from the reference names the reference's."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    for root in lake_roots:
        workdir = str(Path(root).parent)
        for field in df.schema.fields:
            if isinstance(field.dataType, StringType):
                df = df.withColumn(
                    field.name, F.replace(field.name, F.lit(workdir), F.lit("<workdir>"))
                )
    return df


@pytest.mark.slow
def test_feedback_day_without_files_skips_ingest_and_publishes_nothing(
    dagbag: Any, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No JVM: the short-circuit finds no analyst file, so the Spark task is skipped (and no
    asset event can trigger training)."""
    (tmp_path / "analyst_decisions" / "2026-10-03").mkdir(parents=True)
    monkeypatch.setenv("POLICYLAKE_WORKDIR", str(tmp_path))
    monkeypatch.delenv("POLICYLAKE_CONFIG", raising=False)
    state, tis = _dag_test(dagbag.dags["policylake_feedback"], date(2026, 10, 3))
    assert state == "success"
    assert tis == {"analyst_files_arrived": "success", "ingest_analyst_decisions": "skipped"}
