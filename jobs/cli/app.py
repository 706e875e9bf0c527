"""`policylake`: the one command line (console script `policylake = jobs.cli.app:main`).

Every known error is one line on stderr and an exit code (`jobs.core.errors`): 0 done,
1 a stage or check failed, 2 bad usage or configuration. Airflow's spark-submit tasks run
the same application (`jobs/cli/submit.py`), so both behave the same.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from jobs.cli import governance, pipeline
from jobs.cli.common import console
from jobs.cli.policy import policy_app
from jobs.core.errors import EXIT_OK, EXIT_USAGE, PolicylakeError

app = typer.Typer(
    name="policylake",
    help="Adaptive security policy as a nightly batch job on a data lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# the pipeline
app.command("run")(pipeline.run)
app.command("demo")(pipeline.demo)
app.command("generate")(pipeline.generate)
app.command("train")(pipeline.train)
app.command("export")(pipeline.export)
app.command("report")(pipeline.report)
# policies and governance
app.add_typer(policy_app, name="policy")
app.command("feedback")(governance.feedback)
app.command("verify")(governance.verify)
app.command("forget")(governance.forget)
app.add_typer(governance.pseudonym_app, name="pseudonym")


def report(message: str, code: int) -> int:
    """One line on stderr; `code` back for the exit."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    console.print(f"[bold red]error:[/] {escape(first)}", highlight=False, soft_wrap=True)
    return code


def run_cli(application: typer.Typer, argv: list[str] | None = None) -> int:
    """Run `application`; every known error becomes one line on stderr and its exit code."""
    try:
        application(args=argv, standalone_mode=False)
    except PolicylakeError as exc:
        return report(str(exc), exc.exit_code)
    except typer.Abort:
        return report("aborted", 130)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # bad usage: an unknown option, a missing value
        message = str(getattr(exc, "format_message", lambda: str(exc))())
        code = int(getattr(exc, "exit_code", EXIT_USAGE))
        return report(message, code) if message.strip() else code  # (no args: help shown)
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    """The console script: `policylake ...`."""
    sys.exit(run_cli(app, argv))


if __name__ == "__main__":
    main()
