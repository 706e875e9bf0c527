"""The dirt real feeds carry, injected on purpose and recorded line by line.

Only benign lines are spoiled, never scenario events, so a detection can be checked against
ground truth without guessing whether its evidence was dropped on purpose. Each spoiler
returns a line that a strict parser must reject for exactly the recorded reason.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "DIRTY_KINDS",
    "RATES",
    "TIMESTAMP_KEYS",
    "break_timestamp",
    "drop_timestamp",
    "json_separators",
    "truncate",
]

# Share of benign lines per kind (duplicates and late lines are extra copies / moved lines).
RATES: dict[str, float] = {
    "late": 0.005,
    "missing_timestamp": 0.001,
    "bad_timestamp": 0.001,
    "malformed": 0.001,
    "duplicate": 0.005,
}
DIRTY_KINDS = ("duplicate", "missing_timestamp", "bad_timestamp", "malformed", "late")

# JSON keys holding the event time, per source (all are removed / broken together, so no
# fallback field can rescue the line).
TIMESTAMP_KEYS: dict[str, tuple[str, ...]] = {
    "idp": ("published",),
    "windows": ("@timestamp", "EventTime", "EventReceivedTime"),
    "zeek_conn": ("ts", "_write_ts"),
    "zeek_dns": ("ts",),
    "cloudtrail": ("eventTime",),
}
BAD_ISO = ("2026-13-45T25:61:61Z", "not-a-date", "31/02/2026 25:00", "0000-00-00T00:00:00Z")
BAD_EPOCH = ("xx.yy", "1.7.9.0", "17O9000000.1", "--")
BAD_SYSLOG = ("Foo 99 99:99:99", "Dec 45 25:61:99", "2026-13-45T99:99:99.000000+00:00")

_SYSLOG_HEADER = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT[^ ]+) (?P<rest>.*)$"
)


def json_separators(source: str, line: str = "") -> tuple[str, str]:
    """Windows lines keep NXLog/Logstash's spaced JSON (Winlogbeat's are compact, as the
    line shows); the other feeds are compact."""
    spaced = source == "windows" and not line.startswith('{"@timestamp":"')
    return (", ", ": ") if spaced else (",", ":")


def _is_tsv(source: str, file: str) -> bool:
    return source == "zeek_conn" and file.endswith(".log")


def drop_timestamp(source: str, file: str, line: str) -> str:
    """The event without any time field (or Zeek's unset `-`, or syslog without a stamp)."""
    if source == "sshd":
        m = _SYSLOG_HEADER.match(line)
        return m.group("rest") if m else line
    if _is_tsv(source, file):
        fields = line.split("\t")
        fields[0] = "-"
        return "\t".join(fields)
    obj = json.loads(line)
    for key in TIMESTAMP_KEYS[source]:
        obj.pop(key, None)
    return json.dumps(obj, separators=json_separators(source, line))


def break_timestamp(source: str, file: str, line: str, pick: int) -> str:
    """The event with time fields present but unparseable."""
    if source == "sshd":
        m = _SYSLOG_HEADER.match(line)
        if not m:
            return line
        return f"{BAD_SYSLOG[pick % len(BAD_SYSLOG)]} {m.group('rest')}"
    if _is_tsv(source, file):
        fields = line.split("\t")
        fields[0] = BAD_EPOCH[pick % len(BAD_EPOCH)]
        return "\t".join(fields)
    obj = json.loads(line)
    for key in TIMESTAMP_KEYS[source]:
        if key in obj:
            if isinstance(obj[key], (int, float)):
                obj[key] = BAD_EPOCH[pick % len(BAD_EPOCH)]
            else:
                obj[key] = BAD_ISO[pick % len(BAD_ISO)]
    return json.dumps(obj, separators=json_separators(source, line))


def truncate(source: str, file: str, line: str, fraction: float) -> str:
    """A line cut short in transit: broken JSON, too few TSV columns, no syslog message."""
    fraction = min(max(fraction, 0.0), 1.0)
    if source == "sshd":
        end = line.find("]: ")
        end = end if end > 0 else len(line) // 2
        return line[: max(1, int(end * (0.3 + 0.6 * fraction)))]
    if _is_tsv(source, file):
        fields = line.split("\t")
        keep = 3 + int(fraction * 9)
        last = fields[keep]
        return "\t".join([*fields[:keep], last[: max(1, len(last) // 2)]])
    cut = len(line) // 3 + int(fraction * (len(line) - 2 - len(line) // 3))
    return line[: max(1, min(cut, len(line) - 2))]
