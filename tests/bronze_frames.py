"""Hand-built bronze rows and reference files for the validate/normalize tests."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from jobs.core.tables import BRONZE

DAY = date(2026, 10, 1)


def bronze_row(source: str, line: int, run_date: date = DAY, **fields: Any) -> dict[str, Any]:
    """One parsed bronze row: lineage filled in, every other column null unless given."""
    row: dict[str, Any] = {f.name: None for f in BRONZE[source].schema.fields}
    row.update(
        run_date=run_date,
        source=source,
        _file=f"file:/raw/{source}/{run_date.isoformat()}/{source}.log",
        _line=line,
        _batch_id=f"batch-{source}-{run_date.isoformat()}",
        raw=f"line {line} of {source}",
        _parse_status="parsed",
    )
    row.update(fields)
    return row


def bronze_frame(spark: SparkSession, source: str, rows: Sequence[Mapping[str, Any]]) -> DataFrame:
    schema = BRONZE[source].schema
    return spark.createDataFrame([tuple(r[n] for n in schema.names) for r in rows], schema)


def idp_row(line: int, run_date: date = DAY, **fields: Any) -> dict[str, Any]:
    base = {
        "uuid": f"{line:08d}-1111-4111-8111-111111111111",
        "event_type": "user.session.start",
        "actor_id": "00uabcdefghijklmnopq",
        "actor_alternate_id": "Jane.Doe@corp.example",
        "client_ip": "10.0.0.5",
        "outcome_result": "SUCCESS",
        "event_time_raw": f"{run_date.isoformat()}T08:00:{line % 60:02d}.000Z",
    }
    base.update(fields)
    return bronze_row("idp", line, run_date, **base)


def sshd_row(line: int, run_date: date = DAY, **fields: Any) -> dict[str, Any]:
    base = {
        "host": "web-01",
        "pid": 1000 + line,
        "message": f"Accepted publickey for deploy from 10.1.2.3 port {50000 + line} ssh2",
        "ssh_event": "accepted",
        "auth_method": "publickey",
        "user": "deploy",
        "src_ip": "10.1.2.3",
        "src_port": 50000 + line,
        "invalid_user": False,
        "event_time_raw": f"{run_date.isoformat()}T10:00:{line % 60:02d}.000000+00:00",
    }
    base.update(fields)
    return bronze_row("sshd", line, run_date, **base)


DIRECTORY = [
    {
        "user_id": "jane.doe@corp.example",
        "display_name": "Jane Doe",
        "upn": "Jane.Doe@corp.example",
        "sam_account": "CORP\\jdoe",
        "email": "jane.doe@corp-mail.example",
        "aliases": "jane.doe@corp.example|Jane.Doe@corp.example|CORP\\jdoe|jdoe|jane.doe@corp-mail.example",
        "department": "it",
        "role": "sysadmin",
        "peer_group": "it/sysadmin",
        "account_type": "admin",
        "privileged": "true",
        "home_country": "US",
        "home_city": "New York",
        "timezone": "America/New_York",
        "work_start_hour": "9",
        "work_end_hour": "17",
        "devices": "ws-nyc-001|mob-abc",
        "manager": "",
        "created": "2024-01-01",
    },
    {
        "user_id": "bob.smith@corp.example",
        "display_name": "Bob Smith",
        "upn": "Bob.Smith@corp.example",
        "sam_account": "CORP\\bsmith",
        "email": "bob.smith@corp-mail.example",
        "aliases": "bob.smith@corp.example|Bob.Smith@corp.example|CORP\\bsmith|bsmith",
        "department": "sales",
        "role": "account_executive",
        "peer_group": "sales/account_executive",
        "account_type": "human",
        "privileged": "false",
        "home_country": "GB",
        "home_city": "London",
        "timezone": "Europe/London",
        "work_start_hour": "9",
        "work_end_hour": "17",
        "devices": "ws-lon-002",
        "manager": "",
        "created": "2024-01-01",
    },
    {
        "user_id": "svc-backup@corp.example",
        "display_name": "svc-backup",
        "upn": "svc-backup@corp.example",
        "sam_account": "CORP\\svc-backup",
        "email": "",
        "aliases": "svc-backup",
        "department": "it",
        "role": "service",
        "peer_group": "it/service",
        "account_type": "service",
        "privileged": "true",
        "home_country": "US",
        "home_city": "New York",
        "timezone": "America/New_York",
        "work_start_hour": "0",
        "work_end_hour": "24",
        "devices": "",
        "manager": "",
        "created": "2024-01-01",
    },
]

ASSETS = [
    {"asset_id": "ws-nyc-001", "fqdn": "WS-NYC-001.corp.example", "ip": "10.0.1.10", "asset_type": "workstation",
     "os": "Windows 11", "criticality": "low", "tags": "", "owner": "jane.doe@corp.example", "site": "nyc",
     "timezone": "America/New_York"},
    {"asset_id": "ws-lon-002", "fqdn": "WS-LON-002.corp.example", "ip": "10.50.1.20", "asset_type": "workstation",
     "os": "Windows 11", "criticality": "low", "tags": "", "owner": "bob.smith@corp.example", "site": "lon",
     "timezone": "Europe/London"},
    {"asset_id": "dc-nyc-01", "fqdn": "DC-NYC-01.corp.example", "ip": "10.0.0.2", "asset_type": "domain_controller",
     "os": "Windows Server 2022", "criticality": "critical", "tags": "crown-jewel|tier0", "owner": "it",
     "site": "nyc", "timezone": "America/New_York"},
    {"asset_id": "web-01", "fqdn": "web-01.corp.example", "ip": "10.100.0.7", "asset_type": "server",
     "os": "Ubuntu 24.04", "criticality": "high", "tags": "pci", "owner": "it", "site": "ber",
     "timezone": "Europe/Berlin"},
    {"asset_id": "web-02", "fqdn": "web-02.corp.example", "ip": "10.0.0.8", "asset_type": "server",
     "os": "Ubuntu 24.04", "criticality": "medium", "tags": "", "owner": "it", "site": "nyc",
     "timezone": "America/New_York"},
]  # fmt: skip

RANGES = [
    {"cidr": "203.0.113.0/28", "kind": "corporate_egress", "site": "nyc", "country": "US"},
    {"cidr": "198.51.100.16/28", "kind": "vpn", "site": "lon", "country": "GB"},
]


def _write_csv(path: Path, rows: Sequence[Mapping[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_reference(reference_root: str | Path) -> None:
    root = Path(reference_root)
    _write_csv(root / "identity_directory.csv", DIRECTORY)
    _write_csv(root / "asset_inventory.csv", ASSETS)
    _write_csv(root / "network_ranges.csv", RANGES)
