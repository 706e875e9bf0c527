"""The real Windows recordings of ../shared/datasets as one lake: how tests lay them out as raw
telemetry and what each one's metadata says it attacks.

OTRF's atomic recordings (`otrf-security-datasets/datasets/atomic/windows/*/host/*.zip`, one
JSON-lines export each) become raw days under `raw/windows/<date>/<archive>.json`, the date
being the one most of the recording's events carry. Which host and account a recording
attacks is derived from its `_metadata/<id>.yaml` (`simulation.adversary_view`, the attacker's
own transcript), never listed by hand: a lab host is attacked when the transcript names it,
names its address, or runs a command aimed at it (`\\\\host`; as the recording's own process
events spell that command, which are the truth when the transcript names another host); a
host on which a program the transcript runs by its full path started is the attacker's
foothold; `DOMAIN\\user` spellings name the acting accounts; a recording of one host attacks
that host.
"""

from __future__ import annotations

import json
import re
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from jobs.reference.files import ASSET_INVENTORY, IDENTITY_DIRECTORY, NETWORK_RANGES

ATOMIC = Path("otrf-security-datasets") / "datasets" / "atomic"
CREDENTIAL_ACCESS, LATERAL_MOVEMENT = "TA0006", "TA0008"
TIME_KEYS = ("@timestamp", "EventTime", "TimeCreated", "UtcTime")
_ACCOUNT = re.compile(r"(?<![\\:\w])([A-Za-z][\w-]{1,14})\\([\w.$-]{1,64})")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_UNC_HOST = re.compile(r"\\\\([A-Za-z0-9][\w.-]*)")
_PROGRAM = re.compile(r"[A-Za-z]:\\[^\"'\s|<>]+?\.exe\b", re.IGNORECASE)


@dataclass
class Recording:
    """One archive, what its events show, and what its metadata says it attacks."""

    archive: Path
    metadata_id: str
    title: str
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    lines: list[bytes]
    day: date
    hosts: set[str] = field(default_factory=set)  # lower-case short names seen in events
    attacked_hosts: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)  # lower-case user names (no domain)
    footholds: set[str] = field(default_factory=set)  # hosts that ran the transcript's programs

    @property
    def tactic(self) -> str | None:
        """Credential access, else lateral movement, else None (what the recording is judged
        as: a recording of both is judged as credential access)."""
        if CREDENTIAL_ACCESS in self.tactics:
            return CREDENTIAL_ACCESS
        return LATERAL_MOVEMENT if LATERAL_MOVEMENT in self.tactics else None

    @property
    def mapped(self) -> bool:
        """The metadata names a real ATT&CK technique (OTRF writes T0000 for none)."""
        return any(t != "T0000" for t in self.techniques)

    @property
    def raw_name(self) -> str:
        return self.archive.name.split(".")[0] + ".json"


def _members(archive: Path) -> Iterator[bytes]:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.endswith(".json"):
                    yield z.read(name)
        return
    with tarfile.open(archive) as t:
        for member in t.getmembers():
            handle = t.extractfile(member) if member.isfile() else None
            if handle is not None and member.name.endswith(".json"):
                yield handle.read()


def _event_day(event: dict[str, Any]) -> date | None:
    for key in TIME_KEYS:
        value = event.get(key)
        if isinstance(value, str) and len(value) >= 10:
            try:
                return datetime.fromisoformat(value[:10]).date()
            except ValueError:
                continue
    return None


def _short(host: str) -> str:
    return host.strip().split(".")[0].lower()


def _metadata(root: Path) -> dict[str, dict[str, Any]]:
    """archive file name -> its metadata document (the first that links the host archive)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((root / ATOMIC / "_metadata").glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in document.get("files") or []:
            link = str(item.get("link") or "")
            if "/host/" in link:
                out.setdefault(link.rsplit("/", 1)[-1], document)
    return out


def _address_of_hosts(events: list[dict[str, Any]]) -> dict[str, str]:
    """IPv4 address -> host, from the hosts' own outbound connections (Sysmon 3, Initiated)."""
    found: Counter[tuple[str, str]] = Counter()
    for event in events:
        host = event.get("Hostname") or event.get("Computer")
        if (
            str(event.get("EventID")) == "3"
            and str(event.get("Initiated", "")).lower() == "true"
            and isinstance(host, str)
            and isinstance(event.get("SourceIp"), str)
        ):
            found[(str(event["SourceIp"]), _short(host))] += 1
    best: dict[str, tuple[int, str]] = {}
    for (ip, host), n in found.items():
        if ip not in best or n > best[ip][0]:
            best[ip] = (n, host)
    return {ip: host for ip, (_, host) in best.items()}


def footholds_of(events: list[dict[str, Any]], view: str) -> set[str]:
    """Hosts on which a program the transcript runs by its full path started (Sysmon 1,
    Security 4688): the attacker's own foothold, which the transcript often names only by the
    path of its tools (`C:\\Users\\<user>\\Downloads\\...\\mimikatz.exe`)."""
    programs = {p.lower() for p in _PROGRAM.findall(view)}
    if not programs:
        return set()
    return {
        _short(str(e.get("Hostname") or e.get("Computer")))
        for e in events
        if str(e.get("EventID")) in ("1", "4688")
        and str(e.get("Image") or e.get("NewProcessName") or "").lower() in programs
        and (e.get("Hostname") or e.get("Computer"))
    }


def _command_shape(text: str) -> str:
    """A command line with its `\\\\host` arguments blanked, in lower case, spaces collapsed."""
    return " ".join(_UNC_HOST.sub(r"\\\\host", text.lower()).split())


def hosts_reached(events: list[dict[str, Any]], view: str) -> set[str]:
    """Hosts a transcript command aimed at (`\\\\host`) as the recording's own process events
    (Sysmon 1, Security 4688) spell its command line: the events are the truth when the
    transcript names another host than the command that ran."""
    commands = {_command_shape(line) for line in view.splitlines() if _UNC_HOST.search(line)}
    reached = set()
    for event in events:
        line = str(event.get("CommandLine") or "")
        if str(event.get("EventID")) in ("1", "4688") and _UNC_HOST.search(line):
            shape = _command_shape(line)
            if any(command in shape for command in commands):
                reached |= {_short(h) for h in _UNC_HOST.findall(line)}
    return reached


def load_recordings(datasets: Path) -> list[Recording]:
    """Every Windows host recording with a metadata document, parsed once."""
    metadata = _metadata(datasets)
    recordings = []
    for archive in sorted((datasets / ATOMIC / "windows").glob("*/host/*")):
        if not archive.name.endswith((".zip", ".tar.gz")):
            continue
        document = metadata.get(archive.name)
        if document is None:
            continue
        lines = [line for blob in _members(archive) for line in blob.splitlines() if line.strip()]
        events = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
        days = Counter(d for d in (_event_day(e) for e in events) if d is not None)
        if not days:
            continue
        mappings = document.get("attack_mappings") or []
        recording = Recording(
            archive=archive,
            metadata_id=str(document.get("id")),
            title=str(document.get("title")),
            tactics=tuple(str(t) for m in mappings for t in (m.get("tactics") or [])),
            techniques=tuple(str(m.get("technique")) for m in mappings if m.get("technique")),
            lines=lines,
            day=days.most_common(1)[0][0],
            hosts={
                _short(str(e.get("Hostname") or e.get("Computer")))
                for e in events
                if e.get("Hostname") or e.get("Computer")
            },
        )
        view = str((document.get("simulation") or {}).get("adversary_view") or "")
        lowered = view.lower()
        recording.attacked_hosts = {
            h for h in recording.hosts if re.search(rf"\b{re.escape(h)}\b", lowered)
        }
        addresses = _address_of_hosts(events)
        recording.attacked_hosts |= {addresses[ip] for ip in _IPV4.findall(view) if ip in addresses}
        recording.attacked_hosts |= hosts_reached(events, view) & recording.hosts
        recording.footholds = footholds_of(events, view)
        if not recording.attacked_hosts and len(recording.hosts) == 1:
            recording.attacked_hosts = set(recording.hosts)
        domains = {
            str(e.get(k)).lower()
            for e in events
            for k in ("SubjectDomainName", "TargetDomainName")
            if e.get(k) not in (None, "", "-")
        }
        recording.accounts = {
            user.lower() for domain, user in _ACCOUNT.findall(view) if domain.lower() in domains
        }
        recordings.append(recording)
    return recordings


def write_raw(recordings: list[Recording], raw_root: Path) -> list[date]:
    """The recordings as raw Windows days; the dates they fall on."""
    for recording in recordings:
        folder = raw_root / "windows" / recording.day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / recording.raw_name).open("wb") as out:
            for line in recording.lines:
                out.write(line.rstrip(b"\r") + b"\n")
    return sorted({r.day for r in recordings})


def empty_reference(reference_root: Path) -> None:
    """A new deployment's reference files: headers, no rows (the lab's directory and
    inventory are not part of the recordings)."""
    reference_root.mkdir(parents=True, exist_ok=True)
    schemas = {
        "identity_directory.csv": IDENTITY_DIRECTORY,
        "asset_inventory.csv": ASSET_INVENTORY,
        "network_ranges.csv": NETWORK_RANGES,
    }
    for name, schema in schemas.items():
        (reference_root / name).write_text(",".join(schema.fieldNames()) + "\n", encoding="utf-8")
