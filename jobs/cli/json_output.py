"""`--json`: a command's result as one JSON document on stdout (shapes: docs/cli.md).

A command that takes `--json` is wrapped by `json_command(name)`. With the flag, whatever
it prints for people (text, tables, progress) goes to stderr while it runs, the results it
`record`s make up the document, and the document is written to stdout once it ends, also
when a known error stops it (then with `error`, the one line stderr shows). Exit codes do
not change. Without the flag the command runs exactly as it does without this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer

from jobs.core.errors import PolicylakeError

P = ParamSpec("P")

SCHEMA_PREFIX = "policylake.cli"

JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Write the result as one JSON document on stdout (shape: docs/cli.md); "
        "human text goes to stderr. Exit codes are the same.",
    ),
]

# The document of the command running with --json (None: no --json, record nothing).
_document: ContextVar[dict[str, Any] | None] = ContextVar("policylake_cli_json", default=None)


def schema_id(command: str, version: int = 1) -> str:
    """`policylake.cli/<command>/v<version>`: the version changes only when a change would
    break a reader (a field removed, renamed or retyped); new fields keep it."""
    return f"{SCHEMA_PREFIX}/{command}/v{version}"


def first_line(message: str) -> str:
    """What a one-line error shows of a message."""
    text = message.strip()
    return text.splitlines()[0] if text else "failed"


def record(**fields: Any) -> None:
    """Put `fields` in the running command's JSON document (nothing without --json)."""
    document = _document.get()
    if document is not None:
        document.update(fields)


def plain(value: Any) -> Any:
    """`value` as JSON types: dates ISO 8601, paths and other objects as text, sets sorted,
    a float that is not a number (NaN, infinity) as null."""
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=str)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, date):  # and datetime
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(plain(document), allow_nan=False) + "\n")
    sys.stdout.flush()


def json_command(name: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Give a command (whose `json_` parameter is a `JsonOpt`) its JSON document
    `policylake.cli/<name>/v1`: envelope `schema`, `ok`, `exit_code`, `error`, then what it
    records. Goes under `mapped`, which still turns a known error into its one line."""

    def decorate(command: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(command)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            if not kwargs.get("json_"):
                command(*args, **kwargs)
                return
            document: dict[str, Any] = {
                "schema": schema_id(name),
                "ok": True,
                "exit_code": 0,
                "error": None,
            }
            token = _document.set(document)
            outcome: tuple[int, str | None] | None = None
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    command(*args, **kwargs)
                outcome = (0, None)
            except typer.Exit as exc:
                outcome = (int(exc.exit_code), None)
                raise
            except PolicylakeError as exc:
                outcome = (exc.exit_code, first_line(str(exc)))
                raise
            finally:
                _document.reset(token)
                if outcome is not None:  # else a crash: its traceback, no document
                    code, error = outcome
                    document.update(ok=code == 0, exit_code=code, error=error)
                    _emit(document)

        return run

    return decorate
