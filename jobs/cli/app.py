"""`policylake`: the one command line (console script `policylake = jobs.cli.app:main`).

Every known error is one line on stderr and an exit code (`jobs.core.errors`): 0 done,
1 a stage or check failed, 2 bad usage or configuration. Airflow's spark-submit tasks run
the same application (`jobs/cli/submit.py`), so both behave the same.
"""

from __future__ import annotations

import sys

import typer

from jobs.cli import evtx_import, governance, maintenance, pipeline
from jobs.cli.common import command_group, mapped, report_error
from jobs.cli.detections import detections_app
from jobs.cli.policy import policy_app
from jobs.core.errors import EXIT_OK, EXIT_USAGE, PolicylakeError

app = command_group("policylake", "Adaptive security policy as a nightly batch job on a data lake.")
# the pipeline
app.command("run")(mapped(pipeline.run))
app.command("demo")(mapped(pipeline.demo))
app.command("generate")(mapped(pipeline.generate))
app.command("train")(mapped(pipeline.train))
app.command("export")(mapped(pipeline.export))
app.command("report")(mapped(pipeline.report))
# the lake's upkeep (weekly: DAG policylake_maintenance)
app.command("maintain")(mapped(maintenance.maintain))
# telemetry that needs converting before ingest
app.command("import-evtx")(mapped(evtx_import.import_evtx))
# policies and governance
app.add_typer(policy_app, name="policy")
app.add_typer(detections_app, name="detections")
app.command("feedback")(mapped(governance.feedback))
app.add_typer(governance.analyst_app, name="analyst")
app.command("verify")(mapped(governance.verify))
app.command("forget")(mapped(governance.forget))
app.add_typer(governance.pseudonym_app, name="pseudonym")


def run_cli(application: typer.Typer, argv: list[str] | None = None) -> int:
    """Run `application`; every known error becomes one line on stderr and its exit code."""
    try:
        # not standalone: typer returns a command's `typer.Exit` code instead of exiting
        code = application(args=argv, standalone_mode=False)
    except PolicylakeError as exc:
        return report_error(str(exc), exc.exit_code)
    except typer.Abort:
        return report_error("aborted", 130)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # bad usage: an unknown option, a missing value
        formatted = getattr(exc, "format_message", None)
        message = str(formatted() if callable(formatted) else exc)
        code = int(getattr(exc, "exit_code", EXIT_USAGE))
        return report_error(message, code) if message.strip() else code  # (no args: help shown)
    return code if isinstance(code, int) else EXIT_OK


def main(argv: list[str] | None = None) -> None:
    """The console script: `policylake ...`."""
    sys.exit(run_cli(app, argv))


if __name__ == "__main__":
    main()
