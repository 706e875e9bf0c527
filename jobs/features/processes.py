"""Process keys: what baselines remember a process pair by, and scoring looks it up by."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def process_basename(path: Column) -> Column:
    """The lower-case file name of an executable path (`C:\\Windows\\cmd.exe` -> `cmd.exe`)."""
    return F.lower(F.regexp_extract(F.coalesce(path, F.lit("")), r"([^\\/]+)$", 1))


def process_pair(parent: Column, child: Column) -> Column:
    """`parent.exe>child.exe` from lower-case basenames; null when there is no child."""
    return F.when(
        child.isNotNull(), F.concat_ws(">", process_basename(parent), process_basename(child))
    )
