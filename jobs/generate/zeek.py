"""Zeek `conn.log` (one TSV sensor, one JSON sensor) and `dns.log` (JSON lines).

Normal behaviour: workstations talk to their site's domain controllers (DNS, Kerberos,
LDAP), their department's file servers and databases, and SaaS endpoints on the internet,
with bytes drawn from a per-user lognormal; service accounts' servers run backups and ETL;
internet scanners knock on internet-facing servers. Field values are plain tokens, so the
lines are built with string templates (the hot path at ten million events a day).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from jobs.generate.activity import DayContext, expand_seeds, rate_vector
from jobs.generate.clock import US_PER_HOUR, US_PER_SECOND, iso_utc_us, zeek_epoch, zeek_open_close
from jobs.generate.feeds import CONN_SENSORS, DNS_FILE, TSV_SENSORS, conn_file
from jobs.generate.organisation import (
    COMMON_DOMAINS,
    DEPARTMENT_DOMAINS,
    DOMAIN,
    Account,
    Asset,
    Organisation,
)
from jobs.generate.stream import BENIGN, SCENARIO, Entry

__all__ = ["CONN_FIELDS", "ConnEmitter", "DnsEmitter", "expected_daily_external_bytes"]

CONN_PER_DAY = {"human": 35.0, "admin": 35.0, "service": 40.0}
DNS_PER_DAY = {"human": 20.0, "admin": 20.0, "service": 10.0}
EXTERNAL_SHARE = 0.55
ORIG_SIGMA = 1.2
NOISE_SHARE = 0.01  # inbound scans as a share of a sensor's connections

CONN_FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents",
)  # fmt: skip
CONN_TYPES = (
    "time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count",
    "count", "string", "bool", "bool", "count", "string", "count", "count", "count", "count",
    "set[string]",
)  # fmt: skip
HISTORIES = ("ShADadFf", "ShADadfF", "ShADadFRf", "ShADdaFf", "ShADadtFf")
SCAN_PORTS = (22, 23, 443, 3389, 445, 8080, 5900, 80)


def expected_daily_external_bytes(account: Account, scale: float = 1.0) -> float:
    """What a user's workstation normally sends to the internet on a working day."""
    per_conn = math.exp(account.bytes_mu + ORIG_SIGMA**2 / 2)
    return CONN_PER_DAY["human"] * scale * EXTERNAL_SHARE * per_conn


def _domains_for(account: Account) -> list[str]:
    dept = list(DEPARTMENT_DOMAINS.get(account.department, ()))
    return list(COMMON_DOMAINS) + dept * 3


class ConnEmitter:
    """One Zeek sensor's conn.log for the sites it monitors."""

    source = "zeek_conn"

    def __init__(self, shard: str, org: Organisation) -> None:
        self.shard = shard
        self.org = org
        self.sites = CONN_SENSORS[shard]
        self.file = conn_file(shard)
        self.tsv = shard in TSV_SENSORS
        self.domains = {a.department: _domains_for(a) for a in org.humans}

    def files_for_day(self, ctx: DayContext) -> list[str]:
        return [self.file]

    def header(self, file: str, ctx: DayContext) -> list[str]:
        if not self.tsv:
            return []
        return [
            "#separator \\x09",
            "#set_separator\t,",
            "#empty_field\t(empty)",
            "#unset_field\t-",
            "#path\tconn",
            f"#open\t{zeek_open_close(ctx.start_us)}",
            "#fields\t" + "\t".join(CONN_FIELDS),
            "#types\t" + "\t".join(CONN_TYPES),
        ]

    def footer(self, file: str, ctx: DayContext) -> list[str]:
        return [f"#close\t{zeek_open_close(ctx.start_us + 24 * US_PER_HOUR)}"] if self.tsv else []

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]:
        org = self.org
        rates = rate_vector(org, CONN_PER_DAY, ctx.scale)
        for a in org.accounts:
            if (
                a.site not in self.sites
                or (a.account_type == "service" and a.origin < 0)
                or (a.account_type in ("human", "admin") and a.workstation < 0)
            ):
                rates[a.index] = 0.0
        facing = [
            s
            for si in self.sites
            for s in org.assets
            if s.site == si and "internet-facing" in s.tags
        ]
        noise_per_hour = NOISE_SHARE * float(rates.sum()) / 24.0

        def expand(who: int, ts: int, r: list[float], z: list[float]) -> list[Entry]:
            account = org.accounts[who]
            if account.account_type == "service":
                fields = self._service_conn(account, r, z)
            else:
                fields = self._workstation_conn(account, r, z)
            if fields is None:
                return []
            line, uid = self.line(ctx, ts, **fields)
            return [(ts, ctx.next_seq(), self.file, line, BENIGN, uid)]

        def scans(hour_start: int) -> list[Entry]:
            if not facing or not org.noise_ips:
                return []
            n = int(ctx.rng.poisson(noise_per_hour))
            out: list[Entry] = []
            for _ in range(n):
                r = ctx.rng.random(5).tolist()
                ts = hour_start + int(r[0] * US_PER_HOUR)
                target = facing[int(r[1] * 997) % len(facing)]
                src = org.noise_ips[int(r[2] * 99991) % len(org.noise_ips)]
                state = "S0" if r[3] < 0.6 else ("REJ" if r[3] < 0.9 else "SH")
                line, uid = self.line(
                    ctx, ts, orig_h=src, orig_p=1024 + int(r[4] * 64000), resp_h=target.ip,
                    resp_p=SCAN_PORTS[int(r[4] * 800) % len(SCAN_PORTS)], proto="tcp", service=None,
                    duration=None if state == "S0" else 0.000123, orig_bytes=0, resp_bytes=0, state=state,
                    local_orig=False, local_resp=True, history="S" if state == "S0" else ("Sr" if state == "REJ" else "H"),
                    orig_pkts=1, resp_pkts=0 if state == "S0" else 1,
                )  # fmt: skip
                out.append((ts, ctx.next_seq(), self.file, line, BENIGN, uid))
            return out

        yield from expand_seeds(
            ctx, rates, expand, randoms=8, normals=3, lookback_us=0, hourly=scans
        )

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]:
        line, uid = self.line(ctx, ts_us, **spec)  # type: ignore[arg-type]
        return [(ts_us, ctx.next_seq(), self.file, line, SCENARIO, uid)]

    # -- behaviour -----------------------------------------------------------------------

    def _external(self, domain: str, r: float) -> str:
        ips = self.org.service_ips[domain]
        return ips[int(r * 1000) % len(ips)]

    def _workstation_conn(
        self, account: Account, r: list[float], z: list[float]
    ) -> dict[str, Any] | None:
        org = self.org
        ws = org.assets[account.workstation]
        port = 49152 + int(r[1] * 16383)
        kind = r[0]
        if kind < EXTERNAL_SHARE:
            domains = self.domains[account.department]
            dest = self._external(domains[int(r[2] * 7919) % len(domains)], r[3])
            https = r[4] < 0.9
            orig = int(math.exp(account.bytes_mu + ORIG_SIGMA * z[0]))
            resp = int(math.exp(account.bytes_mu + 2.0 + 1.4 * z[1]))
            return self._tcp(
                ws.ip,
                port,
                dest,
                443 if https else 80,
                "ssl" if https else "http",
                orig,
                resp,
                z[2],
                r[5],
                local_resp=False,
            )
        dcs = org.servers(account.site, "dc")
        if kind < 0.67 and dcs:
            dc = dcs[int(r[2] * 100) % len(dcs)]
            return dict(orig_h=ws.ip, orig_p=port, resp_h=dc.ip, resp_p=53, proto="udp", service="dns",
                        duration=0.0002 + r[3] * 0.01, orig_bytes=30 + int(r[4] * 30), resp_bytes=50 + int(r[5] * 250),
                        state="SF", local_orig=True, local_resp=True, history="Dd", orig_pkts=1, resp_pkts=1)  # fmt: skip
        if kind < 0.77 and dcs:
            dc = dcs[int(r[2] * 100) % len(dcs)]
            if r[3] < 0.5:
                return self._tcp(
                    ws.ip,
                    port,
                    dc.ip,
                    88,
                    "krb_tcp",
                    1400 + int(r[4] * 400),
                    1500 + int(r[5] * 600),
                    z[2] - 2.0,
                    r[6],
                    local_resp=True,
                )
            return self._tcp(
                ws.ip,
                port,
                dc.ip,
                389,
                "ldap",
                300 + int(r[4] * 3000),
                900 + int(r[5] * 9000),
                z[2] - 1.0,
                r[6],
                local_resp=True,
            )
        servers = org.usual_file_servers(account)
        if kind < 0.92 and servers:
            fs = servers[int(r[2] * 100) % len(servers)]
            return self._tcp(
                ws.ip,
                port,
                fs.ip,
                445,
                "smb",
                int(math.exp(8.5 + z[0])),
                int(math.exp(10.0 + 1.5 * z[1])),
                z[2] + 1.0,
                r[6],
                local_resp=True,
            )
        if account.department == "finance":
            targets = [s for s in org.servers(account.site, "db") if s.windows]
            resp_p, service = 1433, None
        elif account.department == "engineering" and r[3] < 0.4:
            targets = [s for s in org.servers(account.site, "db") if not s.windows]
            resp_p, service = 5432, None
        else:
            targets = org.servers(account.site, "app")
            resp_p, service = 443, "ssl"
        if not targets:
            return None
        t = targets[int(r[2] * 997) % len(targets)]
        return self._tcp(
            ws.ip,
            port,
            t.ip,
            resp_p,
            service,
            int(math.exp(7.0 + z[0])),
            int(math.exp(9.0 + 1.3 * z[1])),
            z[2],
            r[6],
            local_resp=True,
        )

    def _service_conn(
        self, account: Account, r: list[float], z: list[float]
    ) -> dict[str, Any] | None:
        org = self.org
        origin = org.assets[account.origin]
        port = 32768 + int(r[1] * 28000)
        name = account.sam
        if name.startswith("svc-backup"):
            targets = org.servers(account.site, "file")
            if targets:
                t = targets[int(r[2] * 997) % len(targets)]
                return self._tcp(
                    origin.ip,
                    port,
                    t.ip,
                    445,
                    "smb",
                    int(math.exp(8.0 + z[0])),
                    int(math.exp(15.0 + z[1])),
                    z[2] + 3.0,
                    r[6],
                    local_resp=True,
                )
        if name.startswith(("svc-sql", "svc-etl", "svc-reporting")):
            targets = org.servers(account.site, "db")
            if targets:
                t = targets[int(r[2] * 997) % len(targets)]
                return self._tcp(
                    origin.ip,
                    port,
                    t.ip,
                    1433 if t.windows else 5432,
                    None,
                    int(math.exp(8.0 + z[0])),
                    int(math.exp(12.0 + z[1])),
                    z[2] + 1.0,
                    r[6],
                    local_resp=True,
                )
        if r[3] < 0.7:
            dest = self._external("s3.amazonaws.com", r[4])
            return self._tcp(
                origin.ip,
                port,
                dest,
                443,
                "ssl",
                int(math.exp(account.bytes_mu + z[0])),
                int(math.exp(9.0 + z[1])),
                z[2],
                r[6],
                local_resp=False,
            )
        dcs = org.servers(account.site, "dc")
        if not dcs:
            return None
        return self._tcp(
            origin.ip,
            port,
            dcs[0].ip,
            389,
            "ldap",
            400 + int(r[4] * 2000),
            1200 + int(r[5] * 5000),
            z[2] - 1.0,
            r[6],
            local_resp=True,
        )

    @staticmethod
    def _tcp(
        orig_h: str, orig_p: int, resp_h: str, resp_p: int, service: str | None, orig: int, resp: int,
        z_duration: float, u_state: float, *, local_resp: bool,
    ) -> dict[str, Any]:  # fmt: skip
        if u_state < 0.02:
            return dict(orig_h=orig_h, orig_p=orig_p, resp_h=resp_h, resp_p=resp_p, proto="tcp", service=None,
                        duration=None, orig_bytes=None, resp_bytes=None, state="S0", local_orig=True,
                        local_resp=local_resp, history="S", orig_pkts=1, resp_pkts=0)  # fmt: skip
        state, history = "SF", HISTORIES[int(u_state * 1000) % len(HISTORIES)]
        if u_state > 0.97:
            state, history = "RSTO", "ShADadR"
        elif u_state > 0.94:
            state, history = "RSTR", "ShADadr"
        elif u_state > 0.92:
            state, history = "S1", "ShADad"
        return dict(orig_h=orig_h, orig_p=orig_p, resp_h=resp_h, resp_p=resp_p, proto="tcp", service=service,
                    duration=min(math.exp(-0.5 + 1.5 * z_duration), 7200.0), orig_bytes=max(orig, 0),
                    resp_bytes=max(resp, 0), state=state, local_orig=True, local_resp=local_resp,
                    history=history, orig_pkts=None, resp_pkts=None)  # fmt: skip

    # -- format --------------------------------------------------------------------------

    def line(
        self, ctx: DayContext, ts: int, *, orig_h: str, orig_p: int, resp_h: str, resp_p: int, proto: str,
        service: str | None, duration: float | None, orig_bytes: int | None, resp_bytes: int | None,
        state: str, local_orig: bool, local_resp: bool, history: str, orig_pkts: int | None,
        resp_pkts: int | None,
    ) -> tuple[str, str]:  # fmt: skip
        """One conn record in this sensor's format; returns (line, uid)."""
        uid = "C" + ctx.ids.base62(17)
        header = 28 if proto == "udp" else 52
        ob = orig_bytes or 0
        rb = resp_bytes or 0
        op = orig_pkts if orig_pkts is not None else max(1, ob // 1200 + 3)
        rp = resp_pkts if resp_pkts is not None else (max(1, rb // 1400 + 2) if rb else 0)
        oib = ob + header * op
        rib = rb + header * rp
        if self.tsv:
            cols = [
                zeek_epoch(ts), uid, orig_h, str(orig_p), resp_h, str(resp_p), proto, service or "-",
                "-" if duration is None else f"{duration:.6f}",
                "-" if orig_bytes is None else str(orig_bytes), "-" if resp_bytes is None else str(resp_bytes),
                state, "T" if local_orig else "F", "T" if local_resp else "F", "0", history,
                str(op), str(oib), str(rp), str(rib), "(empty)",
            ]  # fmt: skip
            return "\t".join(cols), uid
        write_ts = iso_utc_us(ts + int((duration or 0.0) * US_PER_SECOND) + 1500)
        parts = [
            f'{{"_path":"conn","_write_ts":"{write_ts}","ts":"{iso_utc_us(ts)}","uid":"{uid}",'
            f'"id.orig_h":"{orig_h}","id.orig_p":{orig_p},"id.resp_h":"{resp_h}","id.resp_p":{resp_p},'
            f'"proto":"{proto}"'
        ]
        if service:
            parts.append(f',"service":"{service}"')
        if duration is not None:
            parts.append(f',"duration":{duration:.6f}')
        if orig_bytes is not None:
            parts.append(f',"orig_bytes":{orig_bytes}')
        if resp_bytes is not None:
            parts.append(f',"resp_bytes":{resp_bytes}')
        parts.append(
            f',"conn_state":"{state}","local_orig":{"true" if local_orig else "false"},'
            f'"local_resp":{"true" if local_resp else "false"},"missed_bytes":0,"history":"{history}",'
            f'"orig_pkts":{op},"orig_ip_bytes":{oib},"resp_pkts":{rp},"resp_ip_bytes":{rib}}}'
        )
        return "".join(parts), uid


class DnsEmitter:
    """The DNS sensor in front of every site's resolvers (the domain controllers)."""

    source = "zeek_dns"

    def __init__(self, shard: str, org: Organisation) -> None:
        self.shard = shard
        self.org = org
        self.file = DNS_FILE
        self.domains = {a.department: _domains_for(a) for a in org.humans}
        self.internal: dict[int, list[Asset]] = {}
        for a in org.assets:
            if a.role != "workstation":
                self.internal.setdefault(a.site, []).append(a)

    def files_for_day(self, ctx: DayContext) -> list[str]:
        return [self.file]

    def header(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def footer(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]:
        org = self.org
        rates = rate_vector(org, DNS_PER_DAY, ctx.scale)
        for a in org.accounts:
            if (a.account_type == "service" and a.origin < 0) or (
                a.account_type in ("human", "admin") and a.workstation < 0
            ):
                rates[a.index] = 0.0

        def expand(who: int, ts: int, r: list[float], _z: list[float]) -> list[Entry]:
            account = org.accounts[who]
            client = org.assets[
                account.origin if account.account_type == "service" else account.workstation
            ]
            dcs = org.servers(account.site, "dc")
            if not dcs:
                return []
            resolver = dcs[int(r[0] * 100) % len(dcs)]
            line, uid = self.line(ctx, ts, account, client.ip, resolver.ip, r)
            return [(ts, ctx.next_seq(), self.file, line, BENIGN, uid)]

        yield from expand_seeds(ctx, rates, expand, randoms=8, lookback_us=0)

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]:
        raise ValueError("no scenario writes DNS records")

    def line(
        self, ctx: DayContext, ts: int, account: Account, client: str, resolver: str, r: list[float]
    ) -> tuple[str, str]:
        uid = "C" + ctx.ids.base62(17)
        rtt = 0.0002 + r[1] * r[1] * 0.05
        answers: list[str] = []
        ttls: list[float] = []
        rcode, rcode_name = 0, "NOERROR"
        qtype, qtype_name = 1, "A"
        if r[2] < 0.18 and self.internal.get(account.site):
            hosts = self.internal[account.site]
            host = hosts[int(r[3] * 9973) % len(hosts)]
            query = host.fqdn
            answers, ttls = [host.ip], [1200.0]
        elif r[2] < 0.20:
            query = ("wpad." if r[3] < 0.5 else "isatap.") + DOMAIN
            rcode, rcode_name = 3, "NXDOMAIN"
        else:
            domains = self.domains.get(account.department) or list(COMMON_DOMAINS)
            query = domains[int(r[3] * 7919) % len(domains)]
            if r[4] < 0.15:
                qtype, qtype_name = 28, "AAAA"
            else:
                answers = list(self.org.service_ips[query])
                ttls = [float(60 + int(r[5] * 3540))] * len(answers)
        body = (
            f'{{"ts":{zeek_epoch(ts)},"uid":"{uid}","id.orig_h":"{client}","id.orig_p":{49152 + int(r[6] * 16383)},'
            f'"id.resp_h":"{resolver}","id.resp_p":53,"proto":"udp","trans_id":{int(r[7] * 65535)},'
            f'"rtt":{rtt:.6f},"query":"{query}","qclass":1,"qclass_name":"C_INTERNET","qtype":{qtype},'
            f'"qtype_name":"{qtype_name}","rcode":{rcode},"rcode_name":"{rcode_name}","AA":false,"TC":false,'
            f'"RD":true,"RA":true,"Z":0'
        )
        if answers:
            body += (
                ',"answers":['
                + ",".join(f'"{a}"' for a in answers)
                + '],"TTLs":['
                + ",".join(f"{t:.1f}" for t in ttls)
                + "]"
            )
        return body + ',"rejected":false}', uid
