"""Shared fixtures: one session-scoped Spark (local[2], UI off, 2 shuffle partitions)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jobs.core.config import Settings, load_settings
from jobs.core.spark import SMALL_INPUT_CONF

if TYPE_CHECKING:
    from jobs.core.context import RunContext, StageResult

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("POLICYLAKE_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
SIGMA = Path(os.environ.get("POLICYLAKE_SIGMA", REPO_ROOT.parent / "shared" / "sigma"))

# Once Airflow has configured logging (the DAG tests), py4j's INFO line from a gateway
# connection closed at interpreter exit goes to pytest's capture stream, closed by then, and
# prints a "--- Logging error ---" traceback after the summary. py4j's warnings still show.
logging.getLogger("py4j").setLevel(logging.WARNING)


# Test data is tiny and the suite is CPU-bound on 2 cores, much of it spent generating and
# compiling (Janino) code for each query rather than running it. On rows counted in hundreds,
# interpreted expressions, no whole-stage codegen and no adaptive re-planning are faster
# (one generated day through every stage, warm: 144 s with codegen, 97 s without; Spark
# evaluates the same expressions either way, so results do not depend on it). The product
# switches to these itself below `spark.small_input_mb` of raw input
# (`jobs.core.spark.fit_to_input`); tests pin them, so every query of the suite runs the same
# way whatever the size of its input.
SMALL_DATA_SPARK_CONF = dict(SMALL_INPUT_CONF)


def small_data_env() -> dict[str, str]:
    """The same settings as environment overrides, for `policylake` processes tests start."""
    return {f"POLICYLAKE__SPARK__CONF__{k}": v for k, v in SMALL_DATA_SPARK_CONF.items()}


def test_settings(workdir: Path, **sections: dict[str, object]) -> Settings:
    """Settings for a test: small local Spark, every path under `workdir`."""
    base = load_settings(None, environ={}).model_dump()
    base["spark"].update(master="local[2]", shuffle_partitions=2, driver_memory="8g")
    base["spark"]["conf"].update(SMALL_DATA_SPARK_CONF)
    for name, values in sections.items():
        base[name].update(values)
    return Settings.model_validate(base).with_workdir(workdir)


test_settings.__test__ = False  # type: ignore[attr-defined]


def run_command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`policylake ARGV...` in this process: exit code, stdout, stderr."""
    from jobs.cli.app import app, run_cli

    code = run_cli(app, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json_command(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, dict[str, Any], str]:
    """`policylake ARGV... --json`: exit code, its document (the whole of stdout), stderr. The
    same command line is run without --json first: the exit code must be the same."""
    code, _, _ = run_command(capsys, *argv)
    json_code, out, err = run_command(capsys, *argv, "--json")
    assert json_code == code, err
    return json_code, json.loads(out), err


@pytest.fixture()
def cli_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with none of the caller's POLICYLAKE_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POLICYLAKE"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return test_settings(tmp_path_factory.mktemp("session"))


@pytest.fixture(scope="session")
def spark(spark_settings: Settings) -> Iterator[object]:
    from jobs.core.spark import build_spark

    session = build_spark(spark_settings)
    yield session
    session.stop()


@pytest.fixture(scope="module", autouse=True)
def _release_cached_frames() -> Iterator[None]:
    """In local mode everything lives in the driver heap: after each module drop the cached
    frames and Delta's table cache (one DeltaLog per table path, each test's lake is new),
    and let Python release the plans its dead DataFrames pin on the JVM side."""
    yield
    from jobs.core.spark import release_session_caches

    release_session_caches()


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The real public recordings in ../shared/datasets; the test skips when absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (set POLICYLAKE_DATASETS)")
    return DATASETS


@pytest.fixture(scope="session")
def sigma() -> Path:
    """SigmaHQ's rules and regression samples in ../shared/sigma; the test skips when absent."""
    if not SIGMA.is_dir():
        pytest.skip(f"SigmaHQ rules not found at {SIGMA} (set POLICYLAKE_SIGMA)")
    return SIGMA


MONTH_START = date(2026, 10, 1)
MONTH_DAYS = 30
MONTH_USERS = 40


@dataclass
class PipelineMonth:
    """A generated month run through every stage up to export, shared by the integration tests.

    Read-only for its users: a test that writes must build its own lake.
    """

    ctx: RunContext
    workdir: Path
    dates: list[date]
    truth: list[dict[str, Any]]
    results: dict[str, StageResult]


@pytest.fixture(scope="session")
def pipeline_month(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> PipelineMonth:
    """Generate 30 days of a 40-person organisation and run ingest .. export over them."""
    from jobs import generate
    from jobs.core.context import RunContext
    from jobs.model.labels import read_ground_truth
    from jobs.pipeline.runner import run_stages

    out = tmp_path_factory.mktemp("month")
    generate.generate_telemetry(out, MONTH_START, MONTH_DAYS, MONTH_USERS, 7, workers=1)
    ctx = RunContext(spark, test_settings(out))
    dates = [MONTH_START + timedelta(days=i) for i in range(MONTH_DAYS)]
    stages = ["ingest", "validate", "normalize", "baselines", "score", "recommend", "export"]
    results = {r.stage: r for r in run_stages(ctx, stages, dates)}
    truth = read_ground_truth(out / "ground_truth.jsonl")
    return PipelineMonth(ctx, out, dates, truth, results)


# The suite runs in two pytest-xdist workers (`scripts/run-tests.sh`): one process alone keeps
# the 2 cores ~68% busy, since much of a Spark test is one driver thread planning. Each worker
# has its own Spark session, so work a fixture shares must stay in one worker: a module's tests
# go together (module fixtures: the DAG runs, `forget`), and the modules that read the
# generated month go to one worker, which builds it once. (xdist's `--dist loadgroup` cannot
# do this under pytest 9: it renames node ids through an attribute pytest 9 no longer reads.)
MONTH_MODULES = {
    "tests/test_baselines.py",
    "tests/test_cluster.py",
    "tests/test_normalize.py",
    "tests/test_recommend_month.py",
    "tests/test_report.py",
    "tests/test_scoring_integration.py",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

        def _reschedule(self, node: Any) -> None:
            # xdist queues a worker's next module when two of its tests are left. A worker
            # holds its last test until it knows the next, so one is enough; with two, a
            # module whose slow fixture comes with its second-to-last test (the DAG runs)
            # makes the next module wait behind that fixture while the other worker idles.
            if self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    config.option.loadscopereorder = False  # keep the heaviest-first order of the items
    return ModuleScheduling(config, log)


# The slowest scopes start first, so neither worker is left with one at the end.
HEAVY_FIRST = (
    "tests/test_dags.py",
    "pipeline_month",
    "tests/test_real_recordings.py",
    "tests/test_privacy.py",
    "tests/test_reliability.py",
)


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _scope(nodeid: str) -> str:
    module = _module(nodeid)
    return "pipeline_month" if module in MONTH_MODULES else module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module that reads the generated month must be in MONTH_MODULES (else two workers
    would each build the month); the HEAVY_FIRST scopes go first."""
    unlisted = sorted(
        {
            _module(item.nodeid)
            for item in items
            if "pipeline_month" in item.fixturenames  # type: ignore[attr-defined]
        }
        - MONTH_MODULES
    )
    if unlisted:
        raise pytest.UsageError(f"add {', '.join(unlisted)} to MONTH_MODULES in tests/conftest.py")
    rank = {scope: n for n, scope in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(_scope(item.nodeid), len(rank)))  # stable
