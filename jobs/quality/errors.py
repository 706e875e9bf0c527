"""The named error of the data-quality machinery."""

from __future__ import annotations

from jobs.core.errors import ConfigError


class SuiteError(ConfigError):
    """A suite file that is missing, malformed or uses an expectation the platform cannot
    turn into a row predicate (configuration: exit code 2)."""
