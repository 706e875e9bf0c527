"""The errors policylake reports to a user in one line, and the exit code each one means.

Every error a user can cause or meet (bad arguments, bad configuration, bad input files, a
failed gate) derives from `PolicylakeError`; the command line (`jobs.cli`) turns any of
them into one line on stderr and its `exit_code`, never a traceback:

- 2, `UsageError`: the command cannot start as given (arguments, configuration, suites,
  policies that do not load);
- 1, `PipelineError`: the command ran and a stage or check failed (a gate, a missing
  input, a broken reconciliation, a refused run).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class PolicylakeError(Exception):
    """An error reported in one line; `exit_code` is what the process exits with."""

    exit_code = EXIT_FAILED


class UsageError(PolicylakeError, ValueError):
    """Bad command-line input: reported in one line, exit code 2."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration problem (policylake.yaml, environment overrides, a suite or policy
    file), phrased for a one-line error naming the bad key or file."""


class PipelineError(PolicylakeError, RuntimeError):
    """A stage refused to go on (bad input, a failed gate, a broken reconciliation)."""


class TableNameError(PipelineError, ValueError):
    """A table name that is not `<layer>.<name>` with a known layer."""


class SchemaMismatchError(PipelineError, ValueError):
    """A frame entering or leaving a stage does not carry the declared columns."""


class ReferenceDataError(PipelineError, FileNotFoundError):
    """A reference file the pipeline needs (directory, inventory, ranges) is missing."""
