"""sshd syslog of the Linux servers (`raw/sshd/<date>/auth.<host>.log`).

Normal behaviour: admins, DevOps engineers and service accounts log in with public keys
from their workstation, the bastion or the job server; internet-facing servers see the
background brute force every exposed sshd sees (invalid users such as `admin`, `oracle`,
`root` from scanners abroad). That noise never names a directory account and stays short
per source, so it cannot pass for an attack on a person. Hosts either write classic BSD
syslog (host local time, no year) or rsyslog's RFC 3339 timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator

from jobs.generate.activity import DayContext, expand_seeds, rate_vector
from jobs.generate.clock import (
    US_PER_HOUR,
    US_PER_SECOND,
    bsd_syslog,
    rfc3339_local_us,
    utc_offset_s,
)
from jobs.generate.feeds import sshd_file
from jobs.generate.organisation import SITES, Account, Asset, Organisation
from jobs.generate.seeding import stable_int
from jobs.generate.stream import BENIGN, Entry

__all__ = ["NOISE_USERS", "SshdEmitter"]

LOGINS_PER_DAY = {"admin": 3.0, "human": 2.0, "service": 5.0}  # humans: only devops (linux=True)
NOISE_LINES_PER_USER = 0.3  # background brute-force lines per directory user per day
NOISE_USERS = (
    "root", "admin", "test", "oracle", "ubuntu", "pi", "postgres", "git", "user", "ftpuser",
    "guest", "support", "webmaster", "nagios", "hadoop", "deploy1", "tomcat",
)  # fmt: skip
KEY_TYPES = ("RSA", "ED25519", "ECDSA")


class SshdEmitter:
    """auth.log of every Linux server (one file per host per day)."""

    source = "sshd"

    def __init__(self, shard: str, org: Organisation) -> None:
        self.shard = shard
        self.org = org
        self.linux = {si: org.linux_servers(si) for si in range(len(SITES))}
        self.facing = [
            a for si in range(len(SITES)) for a in self.linux[si] if "internet-facing" in a.tags
        ]
        self.pids: dict[str, int] = {}
        directory = {a.sam for a in org.accounts}
        self.noise_users = [u for u in NOISE_USERS if u not in directory]

    def files_for_day(self, ctx: DayContext) -> list[str]:
        return []

    def header(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def footer(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]:
        org = self.org
        rates = rate_vector(org, LOGINS_PER_DAY, ctx.scale)
        for a in org.accounts:
            if not a.linux or (a.account_type == "service" and a.origin < 0):
                rates[a.index] = 0.0
        humans = sum(1 for a in org.accounts if a.account_type in ("human", "admin"))
        bursts_per_hour = (
            NOISE_LINES_PER_USER * humans * ctx.scale / 24.0 / 12.0
        )  # ~12 lines a burst

        def expand(who: int, ts: int, r: list[float], _z: list[float]) -> list[Entry]:
            return self._login(ctx, org.accounts[who], ts, r)

        def noise(hour_start: int) -> list[Entry]:
            if not self.facing or not org.noise_ips or not self.noise_users:
                return []
            out: list[Entry] = []
            for _ in range(int(ctx.rng.poisson(bursts_per_hour))):
                r = ctx.rng.random(6).tolist()
                out.extend(self._burst(ctx, hour_start + int(r[0] * US_PER_HOUR), r))
            return out

        yield from expand_seeds(ctx, rates, expand, randoms=8, lookback_us=0, hourly=noise)

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]:
        raise ValueError("no scenario writes sshd lines")

    # -- behaviour -----------------------------------------------------------------------

    def _pid(self, host: Asset) -> int:
        pid = self.pids.get(host.asset_id)
        if pid is None:
            pid = 2000 + stable_int((host.asset_id, self.org.seed)) % 20000
        pid += 1 + stable_int((host.asset_id, pid)) % 7
        self.pids[host.asset_id] = pid
        return pid

    def _login(self, ctx: DayContext, account: Account, ts: int, r: list[float]) -> list[Entry]:
        servers = self.linux[account.site]
        if not servers:
            return []
        bastion = [s for s in servers if s.role == "bastion"]
        if account.account_type == "service":
            src = self.org.assets[account.origin].ip
            pool = [
                s for s in servers if s.role in ("app", "db") and s.index != account.origin
            ] or servers
        else:
            pool = servers
            ws = self.org.assets[account.workstation].ip
            src = ws if r[2] < 0.5 or not bastion else bastion[0].ip
        host = pool[int(r[0] * 9973) % len(pool)]
        if host.role == "bastion" and account.account_type != "service":
            src = self.org.assets[account.workstation].ip
        pid = self._pid(host)
        port = 40000 + int(r[1] * 25000)
        key_type = KEY_TYPES[stable_int(account.sam) % len(KEY_TYPES)]
        fingerprint = ctx.ids.base62(43)
        user = account.sam
        end = ts + int((30 + r[3] * 3600) * US_PER_SECOND)
        msgs = [
            (
                ts,
                f"Accepted publickey for {user} from {src} port {port} ssh2: {key_type} SHA256:{fingerprint}",
            ),
            (ts, f"pam_unix(sshd:session): session opened for user {user} by (uid=0)"),
            (end, f"Received disconnect from {src} port {port}:11: disconnected by user"),
            (end, f"Disconnected from user {user} {src} port {port}"),
            (end, f"pam_unix(sshd:session): session closed for user {user}"),
        ]
        return self._lines(ctx, host, pid, msgs)

    def _burst(self, ctx: DayContext, ts: int, r: list[float]) -> list[Entry]:
        host = self.facing[int(r[1] * 997) % len(self.facing)]
        src = self.org.noise_ips[int(r[2] * 99991) % len(self.org.noise_ips)]
        users = [
            self.noise_users[int((r[3] + k * 0.37) * 1009) % len(self.noise_users)]
            for k in range(1 + int(r[4] * 3))
        ]
        attempts = 1 + int(r[5] * 4)
        out: list[Entry] = []
        t = ts
        if r[4] > 0.9:
            return self._lines(
                ctx,
                host,
                self._pid(host),
                [(t, f"Did not receive identification string from {src}")],
            )
        for k in range(attempts):
            user = users[k % len(users)]
            pid = self._pid(host)
            port = 30000 + stable_int((src, t)) % 35000
            if user == "root":
                msgs = [
                    (
                        t,
                        f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={src}  user=root",
                    ),
                    (
                        t + 2 * US_PER_SECOND,
                        f"Failed password for root from {src} port {port} ssh2",
                    ),
                ]
            else:
                msgs = [
                    (t, f"Invalid user {user} from {src} port {port}"),
                    (t, "pam_unix(sshd:auth): check pass; user unknown"),
                    (
                        t,
                        f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={src} ",
                    ),
                    (
                        t + 2 * US_PER_SECOND,
                        f"Failed password for invalid user {user} from {src} port {port} ssh2",
                    ),
                ]
            msgs.append(
                (t + 2 * US_PER_SECOND, f"Connection closed by {src} port {port} [preauth]")
            )
            out.extend(self._lines(ctx, host, pid, msgs))
            t += (3 + stable_int((src, k)) % 20) * US_PER_SECOND
        return out

    # -- format --------------------------------------------------------------------------

    def rfc3339_host(self, host: Asset) -> bool:
        """About 40% of hosts run rsyslog with high-precision RFC 3339 timestamps."""
        return stable_int(("fmt", host.asset_id)) % 5 < 2

    def _lines(
        self, ctx: DayContext, host: Asset, pid: int, msgs: list[tuple[int, str]]
    ) -> list[Entry]:
        tz = SITES[host.site].timezone
        name = sshd_file(host.asset_id)
        rfc = self.rfc3339_host(host)
        out: list[Entry] = []
        for ts, msg in msgs:
            offset = utc_offset_s(tz, ts)
            stamp = rfc3339_local_us(ts, offset) if rfc else bsd_syslog(ts, offset)
            key = f"{host.asset_id}|{pid}|{ts}|{len(out)}"
            out.append(
                (
                    ts,
                    ctx.next_seq(),
                    name,
                    f"{stamp} {host.asset_id} sshd[{pid}]: {msg}",
                    BENIGN,
                    key,
                )
            )
        return out
