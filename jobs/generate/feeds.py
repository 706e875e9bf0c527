"""Which files each source writes per date folder, and which shard of the work writes them.

A shard is the unit a worker generates over all dates in turn (so an event delivered late
can move to the next day's folder): one Okta tenant, one Windows event collector per site,
two Zeek sensors, one DNS sensor, one CloudTrail trail, the Linux syslog hosts.
"""

from __future__ import annotations

from jobs.core.config import SOURCES
from jobs.generate.organisation import SITES

__all__ = [
    "CLOUDTRAIL_FILE",
    "CONN_SENSORS",
    "DNS_FILE",
    "DNS_SENSOR",
    "IDP_FILE",
    "SOURCES",
    "TSV_SENSORS",
    "conn_file",
    "conn_shard",
    "shards",
    "sshd_file",
    "windows_file",
    "windows_shard",
]


# sensor -> sites whose traffic it sees; sensor01 writes classic TSV, sensor02 JSON lines.
CONN_SENSORS: dict[str, tuple[int, ...]] = {"sensor01": (0, 2), "sensor02": (1, 3)}
TSV_SENSORS = ("sensor01",)
# The DNS sensor taps the links in front of every site's resolvers.
DNS_SENSOR = "sensor01"

IDP_FILE = "okta_system_log.jsonl"
DNS_FILE = f"dns.{DNS_SENSOR}.json"
CLOUDTRAIL_FILE = "cloudtrail.jsonl"


def windows_shard(site: int) -> str:
    """The event collector a site's Windows hosts forward to."""
    return f"wec{site + 1:02d}"


def windows_file(shard: str) -> str:
    return f"{shard}.jsonl"


def conn_shard(site: int) -> str:
    for sensor, sites in CONN_SENSORS.items():
        if site in sites:
            return sensor
    raise KeyError(site)


def conn_file(shard: str) -> str:
    return f"conn.{shard}.log" if shard in TSV_SENSORS else f"conn.{shard}.json"


def sshd_file(host: str) -> str:
    return f"auth.{host}.log"


def shards(source: str) -> list[str]:
    if source == "idp":
        return ["okta"]
    if source == "windows":
        return [windows_shard(i) for i in range(len(SITES))]
    if source == "zeek_conn":
        return list(CONN_SENSORS)
    if source == "zeek_dns":
        return [DNS_SENSOR]
    if source == "cloudtrail":
        return ["trail"]
    if source == "sshd":
        return ["syslog"]
    raise KeyError(source)
