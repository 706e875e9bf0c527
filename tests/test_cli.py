"""The one command line: usage errors, exit codes and one-line errors for every named error
type, the spark-submit application, and the no-op paths (no JVM in this module)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import jobs
from jobs.cli.app import run_cli
from jobs.core.errors import EXIT_FAILED, EXIT_USAGE, PolicylakeError
from tests.conftest import REPO_ROOT, run_command


@pytest.fixture()
def workdir(cli_workdir: Path) -> Path:
    return cli_workdir


_run = run_command


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--stage", "ingest", "--date", "None"], "a run without a logical date?"),
        (["run", "--stage", "ingest", "--date", "2026-13-01"], "must be a date like 2026-10-01"),
        (["run", "--stage", "ingest,bogus", "--date", "2026-10-01"], "unknown stage(s) bogus"),
        (
            ["run", "--stage", "ingest", "--date", "2026-10-01", "--source", "syslog"],
            "unknown source",
        ),
        (
            ["run", "--stage", "validate", "--date", "2026-10-01", "--source", "idp"],
            "--source applies to --stage ingest alone",
        ),
        (
            ["run", "--stage", "score", "--date", "2026-10-01", "--blocking-sources", "idp"],
            "applies to the validate stage",
        ),
        (
            ["run", "--stage", "validate", "--date", "2026-10-01", "--blocking-sources", "nope"],
            "not configured source(s) nope",
        ),
        (["run", "--stage", "train", "--date", "2026-10-01"], "unknown stage(s) train"),
        (["train", "--date", "2026-10-01", "--days", "0"], "--days"),
        (
            ["run", "--stage", "validate", "--date", "2026-10-05", "--to", "2026-10-01"],
            "before the start date",
        ),
        (["run"], "--date is required"),
        (["run", "--date", "2026-10-01", "--bogus"], "No such option: --bogus"),
        (["feedback"], "give --file (one or more) or --date"),
        (["pseudonym", "of", "alice", "--kind", "printer"], "--kind must be one of"),
        (["bogus-command"], "No such command"),
        (["maintain", "--table", "gold.nope"], "no table 'gold.nope' in the catalogue"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert message in _one_error_line(err)


def test_bad_configuration_exits_2_naming_the_key(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "policylake.yaml").write_text("spark:\n  mastr: local[1]\n")
    code, _, err = _run(capsys, "run", "--date", "2026-10-01")
    assert code == EXIT_USAGE
    assert "unknown key 'spark.mastr'" in _one_error_line(err)


def test_sources_the_settings_do_not_ingest_are_skipped(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POLICYLAKE__INGEST__SOURCES", "[idp]")
    code, _, err = _run(
        capsys, "run", "--stage", "ingest", "--date", "2026-10-01", "--source", "sshd"
    )
    assert code == 0
    assert "not configured in ingest.sources, skipped: sshd" in err
    assert "nothing to do" in err


def test_feedback_day_without_files_is_a_clean_no_op(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "feedback", "--date", "2026-10-02", "--workdir", ".")
    assert code == 0
    folder = workdir.resolve() / "analyst_decisions" / "2026-10-02"
    assert out.strip() == f"feedback: no analyst decision files in {folder}; nothing to do"


def test_feedback_with_a_bad_file_fails_before_anything_starts(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = workdir / "analyst_decisions" / "2026-10-02"
    folder.mkdir(parents=True)
    (folder / "decisions.csv").write_text(
        "rec_id,decision,analyst,decided_at\nnot-a-rec,approve,ana,2026-10-02T08:00:00Z\n"
    )
    code, _, err = _run(capsys, "feedback", "--date", "2026-10-02", "--workdir", ".")
    assert code == EXIT_FAILED
    assert "line 2: rec_id" in _one_error_line(err)


def _named_errors() -> list[type[PolicylakeError]]:
    """Every error class the package defines (all its modules imported first)."""
    for module in pkgutil.walk_packages(jobs.__path__, "jobs."):
        importlib.import_module(module.name)
    found: list[type[PolicylakeError]] = []
    todo: list[type[PolicylakeError]] = [PolicylakeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(
        (c for c in found if c.__module__.startswith("jobs.")),
        key=lambda c: f"{c.__module__}.{c.__name__}",
    )


NAMED_ERRORS = _named_errors()


def test_the_named_errors_are_the_ones_this_test_knows() -> None:
    """A new error type must be given an exit code on purpose (and so appear here)."""
    names = {f"{c.__module__}.{c.__name__}": c.exit_code for c in NAMED_ERRORS}
    assert names == {
        "jobs.core.errors.ConfigError": 2,
        "jobs.core.errors.PipelineError": 1,
        "jobs.core.errors.PolicylakeError": 1,
        "jobs.core.errors.ReferenceDataError": 1,
        "jobs.core.errors.SchemaMismatchError": 1,
        "jobs.core.errors.TableNameError": 1,
        "jobs.core.errors.UsageError": 2,
        "jobs.core.lake.TableOwnershipError": 1,
        "jobs.governance.decisions.FeedbackError": 1,
        "jobs.governance.erasure.ErasureError": 1,
        "jobs.governance.privacy.PseudonymKeyError": 2,
        "jobs.model.registry.RegistryUnavailableError": 1,
        "jobs.model.registry.UntrustedModelError": 1,
        "jobs.model.train.TrainError": 1,
        "jobs.policy.schema.PolicyLoadError": 2,
        "jobs.quality.errors.SuiteError": 2,
        "jobs.reference.geo.GeoDatabaseError": 2,
        "jobs.stages.baselines.stage.BaselinesInputError": 1,
    }


@pytest.mark.parametrize("error", NAMED_ERRORS, ids=lambda c: c.__name__)
def test_every_named_error_is_one_line_and_its_exit_code(
    error: type[PolicylakeError], capsys: pytest.CaptureFixture[str]
) -> None:
    probe = typer.Typer(add_completion=False)

    @probe.command()
    def fail() -> None:
        raise error(f"{error.__name__} happened\nsecond line a user must not see")

    @probe.command()
    def other() -> None:  # two commands, so `fail` is a subcommand as in the real app
        raise AssertionError("not called")

    code = run_cli(probe, ["fail"])
    err = capsys.readouterr().err
    assert code == error.exit_code
    assert _one_error_line(err) == f"error: {error.__name__} happened"


def test_the_spark_submit_application_is_the_same_command_line(workdir: Path) -> None:
    """`jobs/cli/submit.py` run as a script (what spark-submit does): same errors, same codes,
    and none of the package's modules shadowed by the script's folder."""
    script = REPO_ROOT / "jobs" / "cli" / "submit.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYLAKE")}
    done = subprocess.run(
        [sys.executable, str(script), "run", "--stage", "ingest,bogus", "--date", "2026-10-01"],
        cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "unknown stage(s) bogus" in _one_error_line(done.stderr)
    helped = subprocess.run(
        [sys.executable, str(script), "run", "--help"],
        cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert helped.returncode == 0 and "--blocking-sources" in helped.stdout


def test_a_failed_check_exits_1(
    workdir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Checks that run and fail (a stale schema file, lint errors) exit 1, not 0 or 2."""
    code, _, err = _run(capsys, "policy", "schema", "--check", "--policies", str(tmp_path))
    assert code == EXIT_FAILED
    assert "is out of date" in _one_error_line(err)
    shutil.copytree(REPO_ROOT / "policies", tmp_path / "policies")
    (tmp_path / "policies" / "broken.yaml").write_text("id: broken\nversion: 1\n")
    code, out, _ = _run(capsys, "policy", "lint", "--policies", str(tmp_path / "policies"))
    assert code == EXIT_FAILED
    assert "error" in out
    code, _, _ = _run(capsys, "policy", "lint", "--policies", str(REPO_ROOT / "policies"))
    assert code == 0


def test_the_demo_ends_with_what_to_look_at_next(tmp_path: Path) -> None:
    from datetime import date

    from jobs.cli.pipeline import next_steps
    from jobs.core.config import load_settings

    settings = load_settings(None, environ={}).with_workdir(tmp_path)
    lines = next_steps(settings, date(2026, 10, 30))
    assert lines[0] == "what to look at next:"
    text = "\n".join(lines)
    assert f"{tmp_path}/reports/2026-10-30/report.html" in text
    assert f"{tmp_path}/data_docs/index.html" in text
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db" in text
    assert f"{tmp_path}/exports/2026-10-30/policy_recommendations.jsonl" in text
    assert "make airflow" in text


def _setup_plan(profile: str, tmp_path: Path, packages: tuple[str, ...] = ()) -> str:
    """`scripts/setup.sh PROFILE` in dry-run mode, with no java on PATH and an apt-cache that
    knows only `packages` (as root, as CI runs it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    known = " ".join(packages)
    (bin_dir / "apt-cache").write_text(
        f'#!/bin/sh\nfor p in {known}; do [ "$2" = "$p" ] && exit 0; done\nexit 100\n'
    )
    (bin_dir / "apt-get").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    for tool in ("dirname", "awk"):  # all else the script uses is bash itself (no java here)
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).unlink(missing_ok=True)
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "SETUP_DRY_RUN": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(REPO_ROOT / "scripts" / "setup.sh"), profile],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("profile", "spec"),
    [("demo", "-e ."), ("airflow", "-e .[airflow]"), ("dev", "-e .[airflow,dev]")],
)
def test_setup_installs_what_each_make_target_needs(
    profile: str, spec: str, tmp_path: Path
) -> None:
    plan = _setup_plan(profile, tmp_path, ("openjdk-17-jre-headless",))
    assert f"pip install -q -c constraints.txt {spec}\n" in plan, plan
    assert "would run: .venv/bin/python -m jobs.core.jars\n" in plan, plan  # Delta's jars, once
    makefile = (REPO_ROOT / "Makefile").read_text()
    target = {"demo": "demo", "airflow": "airflow", "dev": "test"}[profile]
    assert f"\n{target}: $(VENV)/.installed-{profile}\n" in makefile


def test_setup_installs_the_java_the_system_packages_offer(tmp_path: Path) -> None:
    newer = _setup_plan("demo", tmp_path, ("openjdk-21-jre-headless",))  # Debian 13: no 17
    assert "apt-get install -y -qq openjdk-21-jre-headless" in newer, newer
    older = _setup_plan("demo", tmp_path, ("openjdk-17-jre-headless",))
    assert "apt-get install -y -qq openjdk-17-jre-headless" in older, older
    neither = _setup_plan("demo", tmp_path)
    assert "offer neither openjdk-21-jre-headless nor openjdk-17-jre-headless" in neither


DEMO_IMPORT_PROBE = """
import importlib, pkgutil, sys

# What `make demo` does not install: Airflow and its providers, the dev extra's tools.
NOT_INSTALLED = {"airflow", "fsspec", "duckdb", "deltalake", "pytest", "hypothesis", "Evtx",
                 "psutil", "ruff", "mypy", "importlinter"}

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NOT_INSTALLED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the demo install)")
        return None

sys.meta_path.insert(0, NotInstalled())
import jobs
for info in pkgutil.walk_packages(jobs.__path__, "jobs."):
    importlib.import_module(info.name)  # (jobs.orchestration too: it imports Airflow lazily)
try:
    import duckdb
except ModuleNotFoundError:
    pass
else:
    sys.exit("the probe let a dev-only package through")
from jobs.cli.app import app, run_cli
sys.exit(run_cli(app, ["demo", "--help"]))
"""


def test_the_demo_needs_neither_airflow_nor_the_dev_tools() -> None:
    """`make demo` installs the package without its `airflow` and `dev` extras: every module
    of `jobs` imports, and the demo command starts, without them."""
    done = subprocess.run(
        [sys.executable, "-c", DEMO_IMPORT_PROBE],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--workdir" in done.stdout


# --- --json (issue 26): one document on stdout, the same exit codes --------------------------

JSON_COMMANDS = [
    ["run"],
    ["train"],
    ["export"],
    ["verify"],
    ["policy", "lint"],
    ["policy", "test"],
    ["policy", "diff"],
    ["detections", "lint"],
    ["detections", "test"],
]


@pytest.mark.parametrize("command", JSON_COMMANDS, ids=" ".join)
def test_every_json_command_offers_the_flag(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, out, _ = _run(capsys, *command, "--help")
    assert code == 0 and "--json" in out


@pytest.mark.parametrize(
    ("argv", "document"),
    [
        (["verify", "--date", "2026-10-01", "--bogus"], False),  # the parser rejects it
        (["train", "--date", "2026-10-01", "--days", "0"], False),
        (["verify"], True),  # the command starts, then stops
        (["run", "--stage", "ingest", "--date", "2026-13-01"], True),
        (["export", "--date", "yesterday"], True),
        (["policy", "diff", "--date", "x", "--policies", "p"], True),
    ],
)
def test_json_errors_keep_their_exit_code_and_line_with_a_document_once_started(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], document: bool
) -> None:
    """A command line the parser rejects writes nothing on stdout; a command that starts
    and stops on an error writes its document with that error. Stderr and the exit code are
    what the same command line without --json gives."""
    code, out, err = _run(capsys, *argv)
    json_code, json_out, json_err = _run(capsys, *argv, "--json")
    assert json_code == code == EXIT_USAGE and out == ""
    line = _one_error_line(json_err)
    assert line == _one_error_line(err)
    if not document:
        assert json_out == ""
        return
    command = "-".join(argv[:2]) if argv[0] == "policy" else argv[0]
    assert json.loads(json_out) == {
        "schema": f"policylake.cli/{command}/v1",
        "ok": False,
        "exit_code": EXIT_USAGE,
        "error": line.removeprefix("error: "),
    }


def test_json_values_are_plain_json() -> None:
    """Dates as ISO 8601, paths as text, sets sorted, dataclasses as objects, and a float
    that is not a number as null (json.dumps would write NaN, which is not JSON)."""
    from dataclasses import dataclass
    from datetime import date, datetime

    from jobs.cli.json_output import plain

    @dataclass
    class Verdict:
        day: date
        files: frozenset[Path]

    value = {
        datetime(2026, 10, 1, 8, 0): "a datetime key",
        date(2026, 10, 1): [Verdict(date(2026, 10, 2), frozenset({Path("b"), Path("a")}))],
        "at": datetime(2026, 10, 1, 8, 30),
        "metrics": (float("nan"), float("inf"), 0.5, 3, True, None),
    }
    assert plain(value) == {
        "2026-10-01T08:00:00": "a datetime key",
        "2026-10-01": [{"day": "2026-10-02", "files": ["a", "b"]}],
        "at": "2026-10-01T08:30:00",
        "metrics": [None, None, 0.5, 3, True, None],
    }
    json.dumps(plain(value), allow_nan=False)
