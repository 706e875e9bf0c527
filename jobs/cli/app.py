"""`policylake`: the one command line (console script `policylake = jobs.cli.app:main`).

Every known error is one line on stderr and an exit code (`jobs.core.errors`): 0 done,
1 a stage or check failed, 2 bad usage or configuration. Airflow's spark-submit tasks run
the same application (`jobs/cli/submit.py`), so both behave the same.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import typer
from rich.markup import escape

from jobs.cli import governance, pipeline
from jobs.cli.common import console
from jobs.cli.policy import policy_app
from jobs.core.errors import EXIT_USAGE, PolicylakeError

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


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    console.print(f"[bold red]error:[/] {escape(first)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the application; known errors become one line and their exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except PolicylakeError as exc:
        fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # bad usage: unknown option, missing value
        fail(exc.format_message(), EXIT_USAGE)
    sys.exit(0)


if __name__ == "__main__":
    main()
