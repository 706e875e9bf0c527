"""One parser per source: raw lines with lineage -> typed `bronze.<source>` rows."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame

from jobs.stages.ingest.parsers.cloudtrail import parse_cloudtrail
from jobs.stages.ingest.parsers.idp import parse_idp
from jobs.stages.ingest.parsers.sshd import parse_sshd
from jobs.stages.ingest.parsers.windows import parse_windows
from jobs.stages.ingest.parsers.zeek import parse_zeek_conn, parse_zeek_dns

PARSERS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "idp": parse_idp,
    "windows": parse_windows,
    "zeek_conn": parse_zeek_conn,
    "zeek_dns": parse_zeek_dns,
    "cloudtrail": parse_cloudtrail,
    "sshd": parse_sshd,
}
