"""The telemetry generator: layout, bookkeeping, dirt, ground truth and realism.

One small organisation is generated once per module; each test reads the files as the
ingest jobs would, so a wrong line count, a mislabeled dirty row or a scenario without
evidence in the feeds fails here.
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import json
import math
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobs.generate import GenerationSummary, generate_telemetry
from jobs.reference.geo import default_resolver, haversine_km

START = date(2026, 10, 1)  # a Thursday
DAYS = 10
USERS = 30
SEED = 11

DIRECTORY_COLUMNS = [
    "user_id", "display_name", "upn", "sam_account", "email", "aliases", "department", "role",
    "peer_group", "account_type", "privileged", "home_country", "home_city", "timezone",
    "work_start_hour", "work_end_hour", "devices", "manager", "created",
]  # fmt: skip
ASSET_COLUMNS = [
    "asset_id",
    "fqdn",
    "ip",
    "asset_type",
    "os",
    "criticality",
    "tags",
    "owner",
    "site",
    "timezone",
]
SOURCES = ["cloudtrail", "idp", "sshd", "windows", "zeek_conn", "zeek_dns"]
KINDS = {
    "impossible_travel": ["impossible_travel"],
    "new_country_new_device": ["new_country", "new_device"],
    "password_spray": ["password_spray"],
    "brute_force": ["brute_force"],
    "lateral_movement": ["first_time_host_access", "lateral_fan_out"],
    "privileged_off_hours": ["privileged_anomaly", "off_hours"],
    "exfiltration": ["exfiltration_volume"],
    "risky_iam_change": ["risky_iam_change"],
}
JSON_TS_KEYS = {
    "idp": ["published"],
    "windows": ["@timestamp", "EventTime", "EventReceivedTime"],
    "zeek_conn": ["ts", "_write_ts"],
    "zeek_dns": ["ts"],
    "cloudtrail": ["eventTime"],
}
SYSLOG = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) (?P<host>\S+) sshd\[(?P<pid>\d+)\]: (?P<msg>.*)$"
)
MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    )
}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("gen")
    calls: list[tuple[str, int, int]] = []
    summary = generate_telemetry(
        out, START, DAYS, USERS, SEED, progress=lambda w, d, t: calls.append((w, d, t))
    )
    assert calls and calls[-1][1] == calls[-1][2]  # progress reached its total
    return out, summary


@pytest.fixture(scope="module")
def out(generated: tuple[Path, GenerationSummary]) -> Path:
    return generated[0]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def directory(out: Path) -> list[dict[str, str]]:
    return _csv(out / "reference" / "identity_directory.csv")


@pytest.fixture(scope="module")
def inventory(out: Path) -> list[dict[str, str]]:
    return _csv(out / "reference" / "asset_inventory.csv")


@pytest.fixture(scope="module")
def alias_map(directory: list[dict[str, str]]) -> dict[str, str]:
    return {alias: row["user_id"] for row in directory for alias in row["aliases"].split("|")}


@pytest.fixture(scope="module")
def truth(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dirty(out: Path) -> dict[tuple[str, str, str, int], dict[str, object]]:
    rows = [json.loads(line) for line in (out / "dirty_rows.jsonl").read_text().splitlines()]
    return {(r["source"], r["date"], r["file"], r["line"]): r for r in rows}


def _files(out: Path) -> list[Path]:
    return sorted(p for p in (out / "raw").rglob("*") if p.is_file())


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _is_tsv(path: Path) -> bool:
    return path.name.endswith(".log") and path.parent.parent.name == "zeek_conn"


def _iso(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _syslog_time(stamp: str, folder: date, tz: str) -> datetime:
    """BSD syslog has no year and is host local: take the year that puts it near the folder."""
    if stamp[0].isdigit():
        return _iso(stamp)
    month, day, clock = stamp.split()
    candidates = []
    for year in (folder.year - 1, folder.year, folder.year + 1):
        local = datetime.strptime(
            f"{year}-{MONTHS[month]:02d}-{int(day):02d} {clock}", "%Y-%m-%d %H:%M:%S"
        )
        candidates.append(local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC))
    return min(candidates, key=lambda t: abs((t.date() - folder).days))


def _event_time(source: str, path: Path, line: str, host_tz: dict[str, str]) -> datetime:
    """The UTC time of a clean line, the way an ingest parser must read it."""
    folder = date.fromisoformat(path.parent.name)
    if source == "sshd":
        m = SYSLOG.match(line)
        assert m, line
        return _syslog_time(m.group("ts"), folder, host_tz[m.group("host")])
    if _is_tsv(path):
        return datetime.fromtimestamp(float(line.split("\t")[0]), UTC)
    obj = json.loads(line)
    if source == "cloudtrail" and "Records" in obj:
        obj = obj["Records"][0]
    value = obj[JSON_TS_KEYS[source][0]]
    return datetime.fromtimestamp(value, UTC) if isinstance(value, float) else _iso(value)


@pytest.fixture(scope="module")
def host_tz(inventory: list[dict[str, str]]) -> dict[str, str]:
    return {row["asset_id"]: row["timezone"] for row in inventory}


def _idp_events(out: Path) -> list[tuple[date, dict[str, object]]]:
    """Parseable Okta events with a valid `published` (the dirty ones are skipped)."""
    events = []
    for path in sorted((out / "raw" / "idp").rglob("*.jsonl")):
        for line in _lines(path):
            try:
                event = json.loads(line)
                _iso(event.get("published"))
            except (json.JSONDecodeError, ValueError):
                continue
            events.append((date.fromisoformat(path.parent.name), event))
    return events


def _flat_windows(obj: dict[str, Any]) -> dict[str, Any]:
    """A Winlogbeat (ECS) event in NXLog's flat names, so one check reads both collectors."""
    if "winlog" not in obj:
        return obj
    w = obj["winlog"]
    flat = {"@timestamp": obj.get("@timestamp"), "Hostname": w["computer_name"], "Channel": w["channel"],
            "EventID": int(w["event_id"]), "RecordNumber": w["record_id"], "SourceName": w["provider_name"]}  # fmt: skip
    return {**flat, **w["event_data"]}


def _json_lines(out: Path, source: str) -> list[dict[str, object]]:
    rows = []
    for path in sorted((out / "raw" / source).rglob("*")):
        if path.is_file() and not _is_tsv(path):
            for line in _lines(path):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if source == "windows":
                    obj = _flat_windows(obj)
                rows.extend(obj.get("Records", [obj]))
    return rows


# -- determinism ----------------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_any_worker_count(tmp_path: Path) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    generate_telemetry(c, START, 2, 12, SEED + 1, workers=1)
    other = _digest(c)
    generate_telemetry(a, START, 2, 12, SEED, workers=1)
    first = _digest(a)
    # same seed again, in parallel and into the folder of the other run: identical bytes,
    # and no stale file of the earlier run left behind
    generate_telemetry(c, START, 2, 12, SEED, workers=2)
    assert _digest(c) == first
    changed = [k for k in first if k in other and first[k] != other[k]]
    assert "raw/idp/2026-10-01/okta_system_log.jsonl" in changed
    assert "reference/identity_directory.csv" in changed
    assert "raw/zeek_conn/2026-10-02/conn.sensor01.log" in changed


# -- layout and reference files -------------------------------------------------------------


def test_layout_and_reference_files(
    out: Path, directory: list[dict[str, str]], inventory: list[dict[str, str]]
) -> None:
    dates = [(START + timedelta(days=i)).isoformat() for i in range(DAYS)]
    assert sorted(p.name for p in (out / "raw").iterdir()) == SOURCES
    for source in SOURCES:
        assert sorted(p.name for p in (out / "raw" / source).iterdir()) == dates
    for d in dates:
        assert [p.name for p in (out / "raw" / "idp" / d).iterdir()] == ["okta_system_log.jsonl"]
        assert sorted(p.name for p in (out / "raw" / "windows" / d).iterdir()) == [
            f"wec0{i}.jsonl" for i in range(1, 5)
        ]
        assert sorted(p.name for p in (out / "raw" / "zeek_conn" / d).iterdir()) == [
            "conn.sensor01.log",
            "conn.sensor02.json",
        ]
        assert [p.name for p in (out / "raw" / "zeek_dns" / d).iterdir()] == ["dns.sensor01.json"]
        assert [p.name for p in (out / "raw" / "cloudtrail" / d).iterdir()] == ["cloudtrail.jsonl"]
        sshd = [p.name for p in (out / "raw" / "sshd" / d).iterdir()]
        assert sshd and all(re.fullmatch(r"auth\.[a-z0-9-]+\.log", n) for n in sshd)
    for name in ("ground_truth.jsonl", "dirty_rows.jsonl", "generator_manifest.json"):
        assert (out / name).is_file()

    with (out / "reference" / "identity_directory.csv").open() as fh:
        assert next(csv.reader(fh)) == DIRECTORY_COLUMNS
    with (out / "reference" / "asset_inventory.csv").open() as fh:
        assert next(csv.reader(fh)) == ASSET_COLUMNS
    types = Counter(r["account_type"] for r in directory)
    assert types["human"] + types["admin"] == USERS
    assert types["admin"] >= 1 and types["service"] >= 3 and types["break_glass"] == 2
    for row in directory:
        assert row["user_id"] == row["upn"].lower() and row["user_id"].endswith("@corp.example")
        assert row["peer_group"] == f"{row['department']}/{row['role']}"
        assert row["sam_account"].startswith("CORP\\")
        assert {row["user_id"], row["upn"], row["sam_account"], row["email"]} <= set(
            row["aliases"].split("|")
        )
        assert row["privileged"] in ("true", "false")
        ZoneInfo(row["timezone"])
        if row["account_type"] in ("admin", "break_glass"):
            assert row["privileged"] == "true"
        if row["account_type"] == "admin":
            assert row["department"] == "it"
        if row["account_type"] == "service":
            assert row["user_id"].startswith("svc-")
        if row["account_type"] in ("human", "admin"):
            devices = row["devices"].split("|")
            assert 1 <= len(devices) <= 2 and devices[0].startswith("ws-")
            assert 0 <= int(row["work_start_hour"]) < int(row["work_end_hour"]) <= 24
    assets = {r["asset_id"]: r for r in inventory}
    assert len(assets) == len(inventory)
    assert {r["asset_type"] for r in inventory} == {
        "workstation",
        "server",
        "domain_controller",
        "database",
        "jump_host",
    }
    for r in inventory:
        assert r["asset_id"] == r["asset_id"].lower() and r["fqdn"].startswith(r["asset_id"] + ".")
        assert ipaddress.ip_address(r["ip"]).is_private
        assert r["criticality"] in ("low", "medium", "high", "critical")
    for row in directory:
        if row["account_type"] in ("human", "admin"):
            assert assets[row["devices"].split("|")[0]]["owner"] == row["user_id"]


def test_network_ranges_are_real_egress_of_the_site_countries(
    out: Path, directory: list[dict[str, str]]
) -> None:
    ranges = _csv(out / "reference" / "network_ranges.csv")
    assert list(ranges[0]) == ["cidr", "kind", "site", "country"]
    geo = default_resolver()
    sites = {(r["site"], r["kind"]) for r in ranges}
    assert {kind for _, kind in sites} == {"corporate_egress", "vpn"}
    assert len(sites) == len(ranges) == 2 * len({r["site"] for r in ranges})
    assert {r["country"] for r in ranges} == {r["home_country"] for r in directory}
    for r in ranges:
        net = ipaddress.ip_network(r["cidr"])
        for ip in (net[1], net[-2]):
            rec = geo.lookup(str(ip))
            assert rec is not None and rec.country == r["country"], (r, ip)


# -- manifest --------------------------------------------------------------------------------


def test_manifest_accounts_for_every_line(
    out: Path, generated: tuple[Path, GenerationSummary]
) -> None:
    manifest = json.loads((out / "generator_manifest.json").read_text())
    assert manifest["parameters"] == {
        "start": START.isoformat(),
        "days": DAYS,
        "users": USERS,
        "seed": SEED,
        "events_per_user": 1.0,
    }
    entries = {e["path"]: e for e in manifest["files"]}
    on_disk = {str(p.relative_to(out)) for p in _files(out)}
    assert set(entries) == on_disk
    total = 0
    for path_text, e in entries.items():
        lines = _lines(out / path_text)
        header = 0
        while (
            header < len(lines)
            and lines[header].startswith("#")
            and not lines[header].startswith("#close")
        ):
            header += 1
        footer = sum(1 for line in lines[header:] if line.startswith("#close"))
        assert e["lines"] == len(lines), path_text
        assert (e["header_lines"], e["footer_lines"]) == (header, footer), path_text
        assert e["event_lines"] == len(lines) - header - footer
        assert e["events"] >= e["event_lines"]
        if _is_tsv(out / path_text):
            assert header == 8 and footer == 1 and lines[-1].startswith("#close\t")
            assert [h.split("\t")[0].split(" ")[0] for h in lines[:8]] == [
                "#separator", "#set_separator", "#empty_field", "#unset_field", "#path", "#open", "#fields", "#types"]  # fmt: skip
        else:
            assert header == footer == 0
        total += len(lines)
    assert manifest["totals"]["lines"] == total
    summary = generated[1]
    assert summary.total_lines == total
    assert sum(summary.lines_by_source().values()) == total
    assert (
        summary.scenarios
        == manifest["ground_truth"]["lines"]
        == len(_lines(out / "ground_truth.jsonl"))
    )
    assert (
        manifest["dirty_rows"]["lines"]
        == len(_lines(out / "dirty_rows.jsonl"))
        == summary.dirty_rows
    )
    for name, ref in manifest["reference"].items():
        assert ref["lines"] == len(_lines(out / name)) == ref["rows"] + 1


# -- dirty rows ------------------------------------------------------------------------------


def _ts_values(source: str, path: Path, line: str) -> list[object]:
    if _is_tsv(path):
        return [line.split("\t")[0]]
    obj = json.loads(line)
    return [obj[k] for k in JSON_TS_KEYS[source] if k in obj]


def _parses(value: object) -> bool:
    try:
        if isinstance(value, (int, float)):
            return True
        if isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value):
            return True
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", value):
            datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
            return True
        _iso(value)
        return True
    except (ValueError, TypeError):
        return False


def test_dirty_rows_are_what_they_say(
    out: Path, dirty: dict[tuple[str, str, str, int], dict[str, object]], host_tz: dict[str, str]
) -> None:
    kinds = Counter(r["kind"] for r in dirty.values())
    assert set(kinds) == {"duplicate", "missing_timestamp", "bad_timestamp", "malformed", "late"}
    total_events = sum(
        e["event_lines"] for e in json.loads((out / "generator_manifest.json").read_text())["files"]
    )
    assert 0.002 < kinds["duplicate"] / total_events < 0.01
    assert 0.002 < kinds["late"] / total_events < 0.01
    for kind in ("missing_timestamp", "bad_timestamp", "malformed"):
        assert 0.0002 < kinds[kind] / total_events < 0.003, kind
    cache: dict[Path, list[str]] = {}
    for (source, day, name, number), row in dirty.items():
        path = out / "raw" / source / day / name
        lines = cache.setdefault(path, _lines(path))
        line = lines[number - 1]
        kind = row["kind"]
        assert row["event_key"]
        if kind == "duplicate":
            of = row["of_line"]
            assert isinstance(of, int) and of < number and lines[of - 1] == line
            assert (source, day, name, of) not in dirty  # the original is a clean line
        elif kind == "malformed":
            if source == "sshd":
                assert "]: " not in line and not SYSLOG.match(line)
            elif _is_tsv(path):
                assert len(line.split("\t")) < 21
            else:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(line)
        elif kind == "missing_timestamp":
            if source == "sshd":
                assert not SYSLOG.match(line) and re.match(r"^\S+ sshd\[\d+\]: ", line)
            elif _is_tsv(path):
                assert line.split("\t")[0] == "-" and len(line.split("\t")) == 21
            else:
                obj = json.loads(line)
                assert not any(k in obj for k in JSON_TS_KEYS[source])
        elif kind == "bad_timestamp":
            if source == "sshd":
                stamp = line.split(" sshd[")[0].rsplit(" ", 1)[0]
                with pytest.raises((ValueError, KeyError)):
                    _syslog_time(stamp, date.fromisoformat(day), "UTC")
            else:
                values = _ts_values(source, path, line)
                assert values and not any(_parses(v) for v in values), line
        elif kind == "late":
            when = _event_time(source, path, line, host_tz)
            assert when.date() == date.fromisoformat(day) - timedelta(days=1)
        else:
            pytest.fail(f"unknown kind {kind}")


def test_clean_lines_are_clean_and_on_their_date(
    out: Path, dirty: dict[tuple[str, str, str, int], dict[str, object]], host_tz: dict[str, str]
) -> None:
    """Everything not listed as dirty parses and belongs to its folder's UTC date."""
    for path in _files(out):
        source, day = path.parent.parent.name, path.parent.name
        seen: set[str] = set()
        for number, line in enumerate(_lines(path), start=1):
            if line.startswith("#") and _is_tsv(path):
                continue
            if (source, day, path.name, number) in dirty:
                continue
            assert line not in seen, f"unrecorded duplicate {path}:{number}"
            seen.add(line)
            when = _event_time(source, path, line, host_tz)
            assert when.date().isoformat() == day, (path, number, when)


# -- ground truth ----------------------------------------------------------------------------


def test_ground_truth_has_every_kind_with_canonical_entities(
    truth: list[dict[str, object]], directory: list[dict[str, str]], inventory: list[dict[str, str]]
) -> None:
    users = {r["user_id"]: r for r in directory}
    hosts = {r["asset_id"] for r in inventory}
    assert {t["scenario"] for t in truth} == set(KINDS)
    learning_end = START + timedelta(days=math.ceil(DAYS * 0.4))
    range_end = datetime.combine(START + timedelta(days=DAYS), datetime.min.time(), UTC)
    for t in truth:
        assert set(t) == {
            "scenario",
            "entity_type",
            "entity_id",
            "start",
            "end",
            "expected_signals",
            "details",
        }
        assert t["expected_signals"] == KINDS[str(t["scenario"])]
        assert str(t["start"]).endswith("Z") and str(t["end"]).endswith("Z")
        start, end = _iso(t["start"]), _iso(t["end"])
        assert start <= end < range_end
        assert start.date() >= learning_end, t
        kind, etype, eid = t["scenario"], t["entity_type"], str(t["entity_id"])
        if etype in ("user", "service_account"):
            assert eid in users and eid == eid.lower()
            assert users[eid]["account_type"] == (
                "service" if etype == "service_account" else "human"
            )
        elif etype == "host":
            assert eid in hosts
        else:
            assert etype == "ip" and kind == "password_spray"
            assert ipaddress.ip_address(eid).is_global
        if kind == "privileged_off_hours":
            assert users[eid]["privileged"] == "false"
    days = sorted({_iso(t["start"]).date() for t in truth})
    assert len(days) >= 3  # spread over the attack period, not piled on one day


def test_scenario_evidence_is_in_the_feeds(
    out: Path,
    truth: list[dict[str, object]],
    directory: list[dict[str, str]],
    alias_map: dict[str, str],
) -> None:
    geo = default_resolver()
    users = {r["user_id"]: r for r in directory}
    idp = _idp_events(out)

    def who(e: dict[str, object]) -> str:
        return alias_map[e["actor"]["alternateId"]]  # type: ignore[index]

    def ok(e: dict[str, object]) -> bool:
        return str(e["outcome"]["result"]).lower() in ("success", "allow", "allowed", "granted")  # type: ignore[index]

    for t in truth:
        start, end = _iso(t["start"]), _iso(t["end"])
        window = [e for _, e in idp if start <= _iso(e.get("published")) <= end]  # type: ignore[arg-type]
        before = [e for _, e in idp if _iso(e.get("published")) < start]  # type: ignore[arg-type]
        kind, eid = t["scenario"], str(t["entity_id"])
        if kind == "password_spray":
            targets = {who(e) for e in window if e["client"]["ipAddress"] == eid and not ok(e)}  # type: ignore[index]
            assert len(targets) >= 20
        elif kind == "brute_force":
            fails = [e for e in window if who(e) == eid and not ok(e)]
            assert len(fails) >= 30 and len({e["client"]["ipAddress"] for e in fails}) == 1  # type: ignore[index]
        elif kind == "impossible_travel":
            starts = [
                e
                for e in window
                if who(e) == eid and ok(e) and e["eventType"] == "user.session.start"
            ]
            places = {geo.lookup(e["client"]["ipAddress"]).country for e in starts}  # type: ignore[index,union-attr]
            assert len(places) == 2
            first, last = starts[0], starts[-1]
            a, b = geo.lookup(first["client"]["ipAddress"]), geo.lookup(last["client"]["ipAddress"])  # type: ignore[index]
            km = haversine_km(a.latitude, a.longitude, b.latitude, b.longitude)  # type: ignore[arg-type,union-attr]
            hours = (_iso(last["published"]) - _iso(first["published"])).total_seconds() / 3600
            assert hours <= 1.0 and km / hours > 1000
        elif kind == "new_country_new_device":
            new = [e for e in window if who(e) == eid and ok(e)]
            country = geo.lookup(new[0]["client"]["ipAddress"]).country  # type: ignore[index,union-attr]
            device = new[0]["device"]["name"]  # type: ignore[index]
            history = [e for e in before if who(e) == eid]
            assert history
            assert country != users[eid]["home_country"]
            assert all(geo.lookup(e["client"]["ipAddress"]).country != country for e in history)  # type: ignore[index,union-attr]
            assert all(e.get("device", {}).get("name") != device for e in history)  # type: ignore[union-attr]
            assert device not in users[eid]["devices"].split("|")
    windows = _json_lines(out, "windows")
    conns = _conn_rows(out)
    trail = _json_lines(out, "cloudtrail")
    for t in truth:
        start, end = _iso(t["start"]), _iso(t["end"])
        kind, eid = t["scenario"], str(t["entity_id"])
        if kind == "lateral_movement":
            sam = users[eid]["sam_account"].split("\\")[1]
            logons = [
                w
                for w in windows
                if w["EventID"] == 4624 and w.get("TargetUserName") == sam and w["LogonType"] == "3"
            ]
            during = {
                w["Hostname"].split(".")[0].lower()
                for w in logons
                if start <= _iso(w["@timestamp"]) <= end
            }
            earlier = {
                w["Hostname"].split(".")[0].lower() for w in logons if _iso(w["@timestamp"]) < start
            }
            assert len(during - earlier) >= 8 and (end - start) <= timedelta(hours=1)
        elif kind == "privileged_off_hours":
            sam = users[eid]["sam_account"].split("\\")[1]
            special = [w for w in windows if w["EventID"] == 4672 and w["SubjectUserName"] == sam]
            assert special and all(start <= _iso(w["@timestamp"]) <= end for w in special)
            local = _iso(special[0]["@timestamp"]).astimezone(ZoneInfo(users[eid]["timezone"]))
            assert local.hour == 3
        elif kind == "exfiltration":
            ip = next(
                r["ip"]
                for r in _csv(out / "reference" / "asset_inventory.csv")
                if r["asset_id"] == eid
            )
            daily: dict[date, int] = defaultdict(int)
            for c in conns:
                if c["orig_h"] == ip and not c["local_resp"] and isinstance(c["orig_bytes"], int):
                    daily[c["ts"].date()] += c["orig_bytes"]
            normal = max(v for d, v in daily.items() if d < start.date())
            assert daily[start.date()] >= 50 * normal
        elif kind == "risky_iam_change":
            own = [r for r in trail if alias_map.get(_principal(r)) == eid]
            iam_writes = [
                r for r in own if r["eventSource"] == "iam.amazonaws.com" and not r["readOnly"]
            ]
            assert iam_writes and all(start <= _iso(r["eventTime"]) <= end for r in iam_writes)
            assert any(
                r["eventName"] in ("CreateAccessKey", "AttachUserPolicy", "PutUserPolicy")
                for r in iam_writes
            )
            assert any(_iso(r["eventTime"]) < start for r in own)  # it had a normal history


def _principal(record: dict[str, object]) -> str:
    """IAM user name, or the session name (the UPN) of an assumed role."""
    ident = record["userIdentity"]
    assert isinstance(ident, dict)
    return str(ident.get("userName") or str(ident["arn"]).rsplit("/", 1)[-1])


def _conn_rows(out: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in sorted(p for p in (out / "raw" / "zeek_conn").rglob("*") if p.is_file()):
        for line in _lines(path):
            if _is_tsv(path):
                if line.startswith("#"):
                    continue
                f = line.split("\t")
                if len(f) != 21 or not re.fullmatch(r"\d+\.\d+", f[0]):
                    continue
                rows.append({"ts": datetime.fromtimestamp(float(f[0]), UTC), "orig_h": f[2], "resp_h": f[4],
                             "orig_bytes": int(f[9]) if f[9] != "-" else None, "local_resp": f[13] == "T"})  # fmt: skip
            else:
                try:
                    o = json.loads(line)
                    ts = _iso(o["ts"])
                except (json.JSONDecodeError, KeyError, ValueError):
                    continue
                rows.append({"ts": ts, "orig_h": o["id.orig_h"], "resp_h": o["id.resp_h"],
                             "orig_bytes": o.get("orig_bytes"), "local_resp": o["local_resp"]})  # fmt: skip
    return rows


# -- realism ---------------------------------------------------------------------------------


def test_normal_signins_come_from_the_home_country(
    out: Path,
    truth: list[dict[str, object]],
    directory: list[dict[str, str]],
    alias_map: dict[str, str],
) -> None:
    geo = default_resolver()
    users = {r["user_id"]: r for r in directory}
    attack_ips = {str(t["entity_id"]) for t in truth if t["entity_type"] == "ip"}
    attacks = [
        (str(t["entity_id"]), _iso(t["start"]), _iso(t["end"]))
        for t in truth
        if t["entity_type"] == "user"
    ]
    checked = 0
    for _, e in _idp_events(out):
        ip = e["client"]["ipAddress"]  # type: ignore[index]
        user = alias_map[e["actor"]["alternateId"]]  # type: ignore[index]
        when = _iso(e.get("published"))  # type: ignore[arg-type]
        if ip in attack_ips or any(u == user and s <= when <= t for u, s, t in attacks):
            continue
        rec = geo.lookup(ip)
        assert rec is not None and rec.country == users[user]["home_country"], (user, ip)
        checked += 1
    assert checked > 1000


def test_aliases_used_in_feeds_resolve(out: Path, alias_map: dict[str, str]) -> None:
    machine = re.compile(r"^[A-Z0-9-]+\$$")
    idp = [e for _, e in _idp_events(out)]
    spellings = Counter()
    for e in idp:
        alias = e["actor"]["alternateId"]  # type: ignore[index]
        assert alias in alias_map, alias
        spellings[
            "upn"
            if "@corp.example" in alias and alias != alias.lower()
            else "email"
            if "corp-mail" in alias
            else "domain"
            if "\\" in alias
            else "lower"
        ] += 1
    assert len(spellings) == 4  # the IdP sees every spelling
    for w in _json_lines(out, "windows"):
        for key in ("TargetUserName", "SubjectUserName"):
            name = w.get(key)
            if name is None or name == "-" or machine.match(str(name)):
                continue
            assert name in alias_map, (key, name)
        if "User" in w and w["User"] != "NT AUTHORITY\\SYSTEM":
            assert w["User"] in alias_map
    for r in _json_lines(out, "cloudtrail"):
        assert _principal(r) in alias_map, r["userIdentity"]
    accepted = failed = 0
    for path in sorted((out / "raw" / "sshd").rglob("*.log")):
        for line in _lines(path):
            m = re.search(r"Accepted publickey for (\S+) from", line)
            if m:
                accepted += 1
                assert m.group(1) in alias_map
            m = re.search(r"Failed password for (?:invalid user )?(\S+) from", line)
            if m:
                failed += 1
                assert m.group(1) not in alias_map  # internet noise never names a person
    assert accepted and failed


def test_people_work_in_local_hours_on_their_own_devices(
    out: Path,
    truth: list[dict[str, object]],
    directory: list[dict[str, str]],
    alias_map: dict[str, str],
) -> None:
    users = {r["user_id"]: r for r in directory}
    victims = {str(t["entity_id"]) for t in truth}
    attack_ips = {str(t["entity_id"]) for t in truth if t["entity_type"] == "ip"}
    in_hours = total = 0
    for _, e in _idp_events(out):
        user = alias_map[e["actor"]["alternateId"]]  # type: ignore[index]
        if (
            user in victims
            or e["eventType"] != "user.session.start"
            or e["client"]["ipAddress"] in attack_ips
        ):  # type: ignore[index]
            continue
        row = users[user]
        local = _iso(e["published"]).astimezone(ZoneInfo(row["timezone"]))  # type: ignore[arg-type]
        total += 1
        in_hours += int(row["work_start_hour"]) - 1 <= local.hour <= int(row["work_end_hour"])
        assert e["device"]["name"] in row["devices"].split("|")  # type: ignore[index]
    assert total > 200 and in_hours / total > 0.8


def test_windows_carries_a_fleet_mix_of_logs_events_and_shapes(out: Path) -> None:
    """Every log a fleet forwards (Security, Sysmon, PowerShell); what endpoints log most
    (image loads, process access, registry) outnumbers logons; one collector ships with
    Winlogbeat (ECS), the others with NXLog, every day."""
    shapes: dict[str, set[str]] = defaultdict(set)
    for path in sorted((out / "raw" / "windows").rglob("*.jsonl")):
        for line in _lines(path):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a malformed line
            shapes[path.name].add("winlogbeat" if "winlog" in obj else "nxlog")
    assert shapes == {"wec01.jsonl": {"nxlog"}, "wec02.jsonl": {"nxlog"}, "wec03.jsonl": {"nxlog"},
                      "wec04.jsonl": {"winlogbeat"}}  # fmt: skip
    mix = Counter((str(w["Channel"]), w["EventID"]) for w in _json_lines(out, "windows"))
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    assert {c for c, _ in mix} == {"Security", sysmon, "Microsoft-Windows-PowerShell/Operational"}
    endpoint = sum(mix[(sysmon, i)] for i in (7, 10, 12, 13))
    assert endpoint > 1.5 * mix[("Security", 4624)] > 0
    assert all(mix[(sysmon, i)] > 0 for i in (1, 3, 7, 10, 11, 12, 13))


def test_volume_is_about_a_hundred_events_per_person_per_working_day(out: Path) -> None:
    manifest = json.loads((out / "generator_manifest.json").read_text())
    per_day: dict[str, int] = defaultdict(int)
    for e in manifest["files"]:
        per_day[e["date"]] += e["events"]
    weekdays = [n for d, n in per_day.items() if date.fromisoformat(d).weekday() < 5]
    weekend = [n for d, n in per_day.items() if date.fromisoformat(d).weekday() >= 5]
    assert 70 * USERS < sum(weekdays) / len(weekdays) < 140 * USERS
    assert sum(weekend) / len(weekend) < 0.5 * sum(weekdays) / len(weekdays)


def test_events_per_user_scales_volume(tmp_path: Path) -> None:
    small = generate_telemetry(tmp_path / "s", START, 1, 30, SEED, events_per_user=0.5, workers=1)
    full = generate_telemetry(tmp_path / "f", START, 1, 30, SEED, events_per_user=1.0, workers=1)
    assert 0.35 < small.total_events / full.total_events < 0.65
    assert small.scenarios == full.scenarios == 0  # one day is all learning period


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_telemetry(tmp_path, START, 0, 10, 1)
    with pytest.raises(ValueError):
        generate_telemetry(tmp_path, START, 1, 0, 1)
    with pytest.raises(ValueError):
        generate_telemetry(tmp_path, START, 1, 10, 1, events_per_user=0)


# -- the stream engine on its own -------------------------------------------------------------


class _ScriptedEmitter:
    """Emits fixed lines, to pin down how the engine files them around midnight."""

    source = "idp"
    shard = "okta"

    def __init__(self, stamps: list[int]) -> None:
        self.stamps = stamps

    def files_for_day(self, ctx: object) -> list[str]:
        return ["okta_system_log.jsonl"]

    def header(self, file: str, ctx: object) -> list[str]:
        return []

    def footer(self, file: str, ctx: object) -> list[str]:
        return []

    def benign(self, ctx: object):  # type: ignore[no-untyped-def]
        entries = [
            (
                ts,
                k,
                "okta_system_log.jsonl",
                json.dumps({"uuid": f"e{k}", "published": ts}),
                1,
                f"e{k}",
            )
            for k, ts in enumerate(self.stamps)
        ]
        yield entries, max(self.stamps) + 1

    def scenario(self, ctx: object, ts_us: int, spec: dict[str, object]) -> list[object]:
        return []


def test_stream_files_lines_around_midnight(tmp_path: Path) -> None:
    import numpy as np

    from jobs.generate.activity import DayContext
    from jobs.generate.clock import US_PER_DAY, US_PER_SECOND, day_start_us
    from jobs.generate.seeding import IdFactory
    from jobs.generate.stream import write_stream_day

    day0 = START
    start = day_start_us(day0)
    before, inside, after = (
        start - 30 * US_PER_SECOND,
        start + 3600 * US_PER_SECOND,
        start + US_PER_DAY + 60 * US_PER_SECOND,
    )

    def ctx(index: int, stamps: list[int]) -> tuple[_ScriptedEmitter, DayContext]:
        rng = np.random.default_rng(0)
        return _ScriptedEmitter(stamps), DayContext(
            org=None, day=day0 + timedelta(days=index), day_index=index, days=2, seed=0,  # type: ignore[arg-type]
            scale=1.0, rng=rng, ids=IdFactory(rng), resolver=default_resolver(),
        )  # fmt: skip

    # a seed whose dirt draws leave the three lines clean
    emitter, c = ctx(0, [before, inside, after])
    stats, dirty, handover = write_stream_day(
        tmp_path, emitter, c, np.random.default_rng(1), [], []
    )
    path = tmp_path / "raw" / "idp" / day0.isoformat() / "okta_system_log.jsonl"
    stamps = [json.loads(line)["published"] for line in _lines(path)]
    assert stamps == [before, inside]  # the lead-in before midnight is here, but as late
    assert [(r["line"], r["kind"], r["event_key"]) for r in dirty] == [(1, "late", "e0")]
    assert [e[0] for e in handover] == [after]  # after midnight: tomorrow's file
    assert stats[0].lines == stats[0].event_lines == 2

    # next day: the handed-over line is ordinary, a carried line of yesterday is late
    yesterday = (
        inside + 60 * US_PER_SECOND,
        99,
        "okta_system_log.jsonl",
        json.dumps({"uuid": "y", "published": inside}),
        1,
        "y",
    )
    emitter, c = ctx(1, [after + 3600 * US_PER_SECOND])
    stats, dirty, handover = write_stream_day(
        tmp_path, emitter, c, np.random.default_rng(1), [*handover, yesterday], []
    )
    lines = _lines(
        tmp_path / "raw" / "idp" / (day0 + timedelta(days=1)).isoformat() / "okta_system_log.jsonl"
    )
    by_key = {json.loads(line)["uuid"]: n for n, line in enumerate(lines, start=1)}
    assert set(by_key) == {"e2", "y", "e0"}
    assert [(r["kind"], r["event_key"]) for r in dirty] == [("late", "y")]
    assert dirty[0]["line"] == by_key["y"]
    assert handover == []  # last day: nothing moves on
