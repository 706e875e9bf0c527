"""Attack scenarios injected after the learning period, and their ground truth.

Each scenario is planned once (in the parent process) as a list of vendor events routed to
the (source, shard) that writes them, plus one `ground_truth.jsonl` line naming the
canonical entity, the UTC window and the signals a detector is expected to raise.
Victims, attacker addresses and hosts are drawn so that normal behaviour never shows the
same thing: attacker addresses come from countries no site is in, lateral-movement targets
are hosts the victim never logs on to, and the privileged anomaly hits an account that
never had privileges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from jobs.generate.clock import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_SECOND,
    day_start_us,
    iso_utc_s,
    utc_offset_s,
)
from jobs.generate.feeds import conn_shard, windows_shard
from jobs.generate.idp import IdpEmitter
from jobs.generate.organisation import SITES, Account, Asset, Organisation
from jobs.generate.seeding import derive_rng
from jobs.generate.zeek import expected_daily_external_bytes
from jobs.reference.geo import GeoResolver, default_resolver, haversine_km

__all__ = [
    "EXPECTED_SIGNALS",
    "KINDS",
    "Scenario",
    "ScenarioEvent",
    "learning_days",
    "plan_scenarios",
]

KINDS = (
    "impossible_travel",
    "new_country_new_device",
    "password_spray",
    "brute_force",
    "lateral_movement",
    "privileged_off_hours",
    "exfiltration",
    "risky_iam_change",
)
EXPECTED_SIGNALS: dict[str, list[str]] = {
    "impossible_travel": ["impossible_travel"],
    "new_country_new_device": ["new_country", "new_device"],
    "password_spray": ["password_spray"],
    "brute_force": ["brute_force"],
    "lateral_movement": ["first_time_host_access", "lateral_fan_out"],
    "privileged_off_hours": ["privileged_anomaly", "off_hours"],
    "exfiltration": ["exfiltration_volume"],
    "risky_iam_change": ["risky_iam_change"],
}
LEARNING_SHARE = 0.4
USER_DAYS_PER_SCENARIO = 1500  # per kind: one scenario per this many person-days of attack period
MAX_PER_KIND = 50
OFF_HOURS_ACTIONS = [
    ("C:\\Windows\\explorer.exe", "C:\\Windows\\System32\\cmd.exe", '"C:\\Windows\\system32\\cmd.exe"'),
    ("C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\whoami.exe", "whoami /priv"),
    ("C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\net.exe", "net user helpdesk-tmp Winter2026! /add"),
    ("C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\net.exe", "net localgroup administrators helpdesk-tmp /add"),
    ("C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\reg.exe", "reg save HKLM\\SAM C:\\Windows\\Temp\\sam.save"),
    ("C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\vssadmin.exe", "vssadmin create shadow /for=C:"),
]  # fmt: skip
ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"


@dataclass(frozen=True)
class ScenarioEvent:
    """One vendor event of a scenario, for the (source, shard) stream that writes it."""

    source: str
    shard: str
    ts_us: int
    spec: dict[str, object]


@dataclass
class Scenario:
    scenario: str
    entity_type: str
    entity_id: str
    start_us: int
    end_us: int
    details: Mapping[str, object]
    events: list[ScenarioEvent] = field(default_factory=list)

    @property
    def expected_signals(self) -> list[str]:
        return list(EXPECTED_SIGNALS[self.scenario])

    def ground_truth(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "start": iso_utc_s(self.start_us),
            # whole seconds that cover every event (sub-second stamps included)
            "end": iso_utc_s(-(-self.end_us // US_PER_SECOND) * US_PER_SECOND),
            "expected_signals": self.expected_signals,
            "details": dict(self.details),
        }


def learning_days(days: int) -> int:
    """Days at the start that only hold normal behaviour (baselines learn from them)."""
    return max(1, math.ceil(days * LEARNING_SHARE))


class _Planner:
    def __init__(
        self,
        org: Organisation,
        start: date,
        days: int,
        seed: int,
        scale: float,
        resolver: GeoResolver,
    ):
        self.org = org
        self.start = start
        self.days = days
        self.scale = scale
        self.resolver = resolver
        self.rng = derive_rng(seed, "scenarios")
        humans = [a for a in org.accounts if a.account_type == "human" and a.workstation >= 0]
        self.victims: list[Account] = [
            humans[i] for i in self.rng.permutation(len(humans)).tolist()
        ]
        cloud = [a for a in org.accounts if a.cloud and a.account_type in ("service", "human")]
        self.cloud: list[Account] = [cloud[i] for i in self.rng.permutation(len(cloud)).tolist()]
        self.used: set[str] = set()
        attackers = [(c, ip) for c, ips in sorted(org.foreign_ips.items()) for ip in ips[:40]]
        self.attackers = [attackers[i] for i in self.rng.permutation(len(attackers)).tolist()]

    # -- helpers -------------------------------------------------------------------------

    def u(self) -> float:
        return float(self.rng.random())

    def victim(self, ok: Callable[[Account], bool] = lambda a: True) -> Account | None:
        for a in self.victims:
            if a.user_id not in self.used and ok(a):
                self.used.add(a.user_id)
                return a
        return None

    def attacker_ip(
        self, far_from: int | None = None, min_km: float = 0.0
    ) -> tuple[str, str, float]:
        site = SITES[far_from] if far_from is not None else None
        for k, (country, ip) in enumerate(self.attackers):
            rec = self.resolver.lookup(ip)
            if rec is None or rec.latitude is None or rec.longitude is None:
                continue
            km = (
                haversine_km(site.latitude, site.longitude, rec.latitude, rec.longitude)
                if site
                else 0.0
            )
            if km >= min_km:
                del self.attackers[k]
                return ip, country, km
        raise RuntimeError("ran out of attacker addresses")

    def at_local(self, day: int, site: int, hour: float, duration_us: int) -> int:
        """UTC time of `hour` local on the site's calendar, kept inside UTC day `day`."""
        d0 = day_start_us(self.start + timedelta(days=day))
        offset = utc_offset_s(SITES[site].timezone, d0 + 12 * US_PER_HOUR)
        ts = d0 - offset * US_PER_SECOND + int(hour * US_PER_HOUR)
        while ts < d0:
            ts += US_PER_DAY
        while ts >= d0 + US_PER_DAY:
            ts -= US_PER_DAY
        latest = d0 + US_PER_DAY - duration_us - 10 * 60 * US_PER_SECOND
        return min(ts, latest)

    def idp(self, ts: int, account: Account, **spec: object) -> ScenarioEvent:
        return ScenarioEvent("idp", "okta", ts, {"account": account.index, **spec})

    def windows(self, ts: int, host: Asset, **spec: object) -> ScenarioEvent:
        return ScenarioEvent("windows", windows_shard(host.site), ts, {"host": host.index, **spec})

    def session_id(self) -> str:
        return "102" + "".join(
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[i]
            for i in self.rng.integers(0, 62, 22).tolist()
        )

    def known_device(self, account: Account) -> dict[str, object]:
        device = IdpEmitter("okta", self.org).known_device(account, mobile=False)
        assert device is not None
        return device

    # -- scenarios -----------------------------------------------------------------------

    def impossible_travel(self, day: int) -> Scenario | None:
        a = self.victim()
        if a is None:
            return None
        far_ip, country, km = self.attacker_ip(a.site, 5000.0)
        gap = int((20 + self.u() * 35) * 60) * US_PER_SECOND
        t0 = self.at_local(day, a.site, 9 + self.u() * 6, gap + 600 * US_PER_SECOND)
        home_ip = self.org.egress[a.site][0] if self.u() < 0.5 or not a.home_ips else a.home_ips[0]
        device = self.known_device(a)
        s1, s2 = self.session_id(), self.session_id()
        t1 = t0 + gap
        events = [
            self.idp(t0, a, event_type="user.session.start", ip=home_ip, device=device, session=s1),
            self.idp(t0 + 9 * US_PER_SECOND, a, event_type="user.authentication.auth_via_mfa", ip=home_ip, device=device, session=s1),
            self.idp(t0 + 70 * US_PER_SECOND, a, event_type="user.authentication.sso", ip=home_ip, device=device, session=s1, app="office365"),
            self.idp(t1, a, event_type="user.session.start", ip=far_ip, device=device, session=s2),
            self.idp(t1 + 12 * US_PER_SECOND, a, event_type="user.authentication.auth_via_mfa", ip=far_ip, device=device, session=s2),
            self.idp(t1 + 95 * US_PER_SECOND, a, event_type="user.authentication.sso", ip=far_ip, device=device, session=s2, app="office365"),
        ]  # fmt: skip
        details = {"home_ip": home_ip, "home_country": SITES[a.site].country, "far_ip": far_ip,
                   "far_country": country, "distance_km": round(km), "minutes_apart": round(gap / 60e6, 1)}  # fmt: skip
        return Scenario(
            "impossible_travel", "user", a.user_id, t0, events[-1].ts_us, details, events
        )

    def new_country_new_device(self, day: int) -> Scenario | None:
        a = self.victim()
        if a is None:
            return None
        ip, country, _ = self.attacker_ip(a.site, 2000.0)
        t0 = self.at_local(day, a.site, 7 + self.u() * 12, US_PER_HOUR)
        name = "DESKTOP-" + "".join(
            "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"[i] for i in self.rng.integers(0, 34, 7).tolist()
        )
        device = {
            "id": "guo" + self.session_id()[3:20],
            "name": name,
            "os_platform": "WINDOWS",
            "managed": False,
            "registered": True,
        }
        s = self.session_id()
        agent = "windows_chrome" if self.u() < 0.5 else "linux_firefox"
        events = [
            self.idp(t0, a, event_type="user.session.start", ip=ip, device=device, session=s, agent=agent),
            self.idp(t0 + 15 * US_PER_SECOND, a, event_type="user.authentication.auth_via_mfa", ip=ip, device=device, session=s, agent=agent),
        ]  # fmt: skip
        t = t0 + 60 * US_PER_SECOND
        for app in ("office365", "slack", "zoom")[: 1 + int(self.u() * 3)]:
            events.append(
                self.idp(
                    t,
                    a,
                    event_type="user.authentication.sso",
                    ip=ip,
                    device=device,
                    session=s,
                    agent=agent,
                    app=app,
                )
            )
            t += int((60 + self.u() * 600) * US_PER_SECOND)
        details = {
            "ip": ip,
            "country": country,
            "device": name,
            "home_country": SITES[a.site].country,
        }
        return Scenario(
            "new_country_new_device", "user", a.user_id, t0, events[-1].ts_us, details, events
        )

    def password_spray(self, day: int) -> Scenario | None:
        targets_pool = [a for a in self.org.accounts if a.account_type in ("human", "admin")]
        if not targets_pool:
            return None
        ip, country, _ = self.attacker_ip()
        n = min(len(targets_pool), 22 + int(self.u() * 18))
        targets = [
            targets_pool[i]
            for i in sorted(self.rng.choice(len(targets_pool), size=n, replace=False).tolist())
        ]
        site = int(self.u() * len(SITES)) % len(SITES)
        t0 = self.at_local(day, site, self.u() * 23, US_PER_HOUR)
        with_windows = self.u() < 0.5
        rdgw = self.org.servers(site, "rdgw")
        events: list[ScenarioEvent] = []
        t = t0
        for a in targets:
            alias = a.upn if self.u() < 0.6 else a.email
            events.append(self.idp(t, a, event_type="user.session.start", ip=ip, success=False,
                                   reason="INVALID_CREDENTIALS", agent="python", alias=alias))  # fmt: skip
            if with_windows and rdgw:
                events.append(self.windows(t + 3 * US_PER_SECOND, rdgw[0], kind="logon_failure", account=a.index,
                                           ip=ip, port=str(40000 + int(self.u() * 20000)), logon_type="3"))  # fmt: skip
            t += int((15 + self.u() * 45) * US_PER_SECOND)
        sources = ["idp", "windows"] if with_windows and rdgw else ["idp"]
        details = {"country": country, "targets": [a.user_id for a in targets], "sources": sources}
        return Scenario("password_spray", "ip", ip, t0, events[-1].ts_us, details, events)

    def brute_force(self, day: int) -> Scenario | None:
        a = self.victim()
        if a is None:
            return None
        ip, country, _ = self.attacker_ip(a.site, 2000.0)
        failures = 30 + int(self.u() * 30)
        t0 = self.at_local(day, a.site, self.u() * 23, US_PER_HOUR)
        agent = "python" if self.u() < 0.5 else "curl"
        events = []
        t = t0
        for _ in range(failures):
            events.append(self.idp(t, a, event_type="user.session.start", ip=ip, success=False,
                                   reason="INVALID_CREDENTIALS", agent=agent, alias=a.upn))  # fmt: skip
            t += int((4 + self.u() * 16) * US_PER_SECOND)
        succeeded = self.u() < 0.5
        if succeeded:
            s = self.session_id()
            events.append(
                self.idp(
                    t,
                    a,
                    event_type="user.session.start",
                    ip=ip,
                    agent=agent,
                    alias=a.upn,
                    session=s,
                )
            )
        details = {"ip": ip, "country": country, "failures": failures, "succeeded": succeeded}
        return Scenario("brute_force", "user", a.user_id, t0, events[-1].ts_us, details, events)

    def lateral_movement(self, day: int) -> Scenario | None:
        a = self.victim()
        if a is None:
            return None
        ws = self.org.assets[a.workstation]
        usual = {h.asset_id for h in self.org.usual_windows_hosts(a)}
        candidates = [
            h for h in self.org.assets
            if h.windows and h.role in ("workstation", "file", "db", "rdgw") and h.asset_id not in usual
        ]  # fmt: skip
        same_site = [h for h in candidates if h.site == a.site]
        others = [h for h in candidates if h.site != a.site]
        pool = [same_site[i] for i in self.rng.permutation(len(same_site)).tolist()]
        pool += [others[i] for i in self.rng.permutation(len(others)).tolist()]
        n = min(len(pool), 8 + int(self.u() * 5))
        if n < 8:
            self.used.discard(a.user_id)
            return None
        targets = pool[:n]
        t0 = self.at_local(day, a.site, 13 + self.u() * 5, 70 * 60 * US_PER_SECOND)
        events: list[ScenarioEvent] = []
        t = t0
        for k, h in enumerate(targets):
            port = str(49700 + k * 7)
            if k < 3:
                events.append(
                    self.windows(
                        t - 2 * US_PER_SECOND,
                        ws,
                        kind="explicit",
                        account=a.index,
                        target_server=h.hostname,
                    )
                )
            events.append(self.windows(t, h, kind="logon", account=a.index, logon_type="3", ip=ws.ip, port=port,
                                       workstation=ws.hostname, package="NTLM"))  # fmt: skip
            events.append(
                self.windows(
                    t + 2 * US_PER_SECOND,
                    h,
                    kind="share",
                    account=a.index,
                    share="\\\\*\\ADMIN$",
                    ip=ws.ip,
                )
            )
            events.append(ScenarioEvent("zeek_conn", conn_shard(a.site), t - US_PER_SECOND, dict(
                orig_h=ws.ip, orig_p=int(port), resp_h=h.ip, resp_p=445, proto="tcp", service="smb",
                duration=3.5 + k, orig_bytes=4200 + 113 * k, resp_bytes=3100 + 57 * k, state="SF",
                local_orig=True, local_resp=True, history="ShADadFf", orig_pkts=None, resp_pkts=None)))  # fmt: skip
            t += int((90 + self.u() * 180) * US_PER_SECOND)  # 8-12 hosts in under an hour
        details = {"source_host": ws.asset_id, "targets": [h.asset_id for h in targets]}
        return Scenario(
            "lateral_movement",
            "user",
            a.user_id,
            min(e.ts_us for e in events),
            max(e.ts_us for e in events),
            details,
            events,
        )

    def privileged_off_hours(self, day: int) -> Scenario | None:
        a = self.victim(lambda x: not x.privileged)
        if a is None:
            return None
        ws = self.org.assets[a.workstation]
        rdgw = self.org.servers(a.site, "rdgw")
        src = rdgw[0].ip if rdgw else "127.0.0.1"
        t0 = self.at_local(day, a.site, 3 + self.u() * 0.5, US_PER_HOUR)
        events = [
            self.windows(t0, ws, kind="logon", account=a.index, logon_type="10", ip=src, port="51234", workstation=ws.hostname, package="Negotiate"),
            self.windows(t0, ws, kind="special", account=a.index),
        ]  # fmt: skip
        t = t0
        for action in OFF_HOURS_ACTIONS:
            t += int((20 + self.u() * 120) * US_PER_SECOND)
            events.append(
                self.windows(t, ws, kind="process", account=a.index, process=list(action))
            )
        offset = utc_offset_s(SITES[a.site].timezone, t0)
        local = (t0 // US_PER_SECOND + offset) % 86400
        details = {"host": ws.asset_id, "local_time": f"{local // 3600:02d}:{local % 3600 // 60:02d}",
                   "actions": [x[2] for x in OFF_HOURS_ACTIONS]}  # fmt: skip
        return Scenario(
            "privileged_off_hours", "user", a.user_id, t0, events[-1].ts_us, details, events
        )

    def exfiltration(self, day: int) -> Scenario | None:
        a = self.victim()
        if a is None:
            return None
        ws = self.org.assets[a.workstation]
        ip, country, _ = self.attacker_ip()
        normal = expected_daily_external_bytes(a, self.scale)
        total = int(max(50e6, 150 * normal))
        parts = 1 + int(self.u() * 3)
        durations = [int(600 + self.u() * 1800) for _ in range(parts)]
        t0 = self.at_local(day, a.site, 19 + self.u() * 3, (sum(durations) + 600) * US_PER_SECOND)
        events: list[ScenarioEvent] = []
        t = t0
        for k in range(parts):
            size = total // parts
            events.append(ScenarioEvent("zeek_conn", conn_shard(a.site), t, dict(
                orig_h=ws.ip, orig_p=50000 + k * 13, resp_h=ip, resp_p=443, proto="tcp", service="ssl",
                duration=float(durations[k]), orig_bytes=size, resp_bytes=size // 180, state="SF",
                local_orig=True, local_resp=False, history="ShADadFf", orig_pkts=None, resp_pkts=None)))  # fmt: skip
            t += (durations[k] + 30) * US_PER_SECOND
        end = events[-1].ts_us + durations[-1] * US_PER_SECOND
        details = {"user": a.user_id, "destination_ip": ip, "country": country, "bytes_out": total,
                   "normal_daily_bytes": int(normal)}  # fmt: skip
        return Scenario("exfiltration", "host", ws.asset_id, t0, end, details, events)

    def risky_iam_change(self, day: int) -> Scenario | None:
        principal = next((c for c in self.cloud if c.user_id not in self.used), None)
        if principal is None:
            return None
        self.used.add(principal.user_id)
        service = principal.account_type == "service"
        t0 = self.at_local(day, principal.site, 10 + self.u() * 7, US_PER_HOUR)
        ip = self.org.egress[principal.site][
            int(self.u() * 4) % len(self.org.egress[principal.site])
        ]
        target = principal.sam if service else "svc-ci"
        key_id = "AKIA" + "".join(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[i] for i in self.rng.integers(0, 32, 16).tolist()
        )
        calls = [
            ("CreateAccessKey", {"userName": target},
             {"accessKey": {"accessKeyId": key_id, "status": "Active", "userName": target, "createDate": ""}}),
            ("AttachUserPolicy", {"userName": target, "policyArn": ADMIN_POLICY}, None),
            ("PutUserPolicy", {"userName": target, "policyName": "ops-maintenance",
                               "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'}, None),
        ]  # fmt: skip
        order = self.rng.permutation(3).tolist()[: 2 + int(self.u() * 2)]
        events: list[ScenarioEvent] = []
        t = t0
        for i in sorted(order):
            name, request, response = calls[i]
            if response is not None:
                response = {"accessKey": {**response["accessKey"], "createDate": iso_utc_s(t)}}
            events.append(ScenarioEvent("cloudtrail", "trail", t, {
                "account": principal.index, "event_source": "iam.amazonaws.com", "event_name": name,
                "read_only": False, "source_ip": ip, "request": request, "response": response}))  # fmt: skip
            t += int((30 + self.u() * 240) * US_PER_SECOND)
        details = {
            "calls": [calls[i][0] for i in sorted(order)],
            "target_user": target,
            "source_ip": ip,
        }
        return Scenario(
            "risky_iam_change",
            "service_account" if service else "user",
            principal.user_id,
            t0,
            events[-1].ts_us,
            details,
            events,
        )


def plan_scenarios(
    org: Organisation,
    start: date,
    days: int,
    seed: int,
    scale: float = 1.0,
    resolver: GeoResolver | None = None,
) -> list[Scenario]:
    """Every scenario of the run, spread over the days after the learning period."""
    first = learning_days(days)
    attack_days = list(range(first, days))
    if not attack_days:
        return []
    planner = _Planner(org, start, days, seed, scale, resolver or default_resolver())
    humans = sum(1 for a in org.accounts if a.account_type in ("human", "admin"))
    per_kind = int(
        min(MAX_PER_KIND, max(1, round(humans * len(attack_days) / USER_DAYS_PER_SCENARIO)))
    )
    instances = [kind for _ in range(per_kind) for kind in KINDS]
    shuffled = [instances[i] for i in planner.rng.permutation(len(instances)).tolist()]
    # each kind's first instance is planned first, so small orgs still get one of every kind
    seen: dict[str, int] = {}
    ranked = []
    for pos, kind in enumerate(shuffled):
        seen[kind] = seen.get(kind, 0) + 1
        ranked.append((seen[kind], pos, kind))
    ranked.sort()
    ordered = [kind for _, _, kind in ranked]
    day_of = np.array(
        [attack_days[(j * len(attack_days)) // len(ordered)] for j in range(len(ordered))]
    )
    day_of = day_of[planner.rng.permutation(len(ordered))]
    out: list[Scenario] = []
    for kind, day in zip(ordered, day_of.tolist(), strict=True):
        scenario = getattr(planner, kind)(int(day))
        if scenario is not None:
            out.append(scenario)
    out.sort(key=lambda s: (s.start_us, s.scenario, s.entity_id))
    return out
