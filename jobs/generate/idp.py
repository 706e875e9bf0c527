"""Okta System Log sign-in events (`raw/idp/<date>/okta_system_log.jsonl`).

Normal behaviour: people sign in from their site's corporate egress, its VPN, or their home
ISP (all in the home country), on their own devices, mostly in local working hours, and
single-sign-on to their department's apps. A few mistype their password first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import numpy as np

from jobs.generate.activity import DayContext, expand_seeds, rate_vector, site_offset
from jobs.generate.clock import US_PER_SECOND, iso_offset_ms, iso_utc_ms
from jobs.generate.feeds import IDP_FILE
from jobs.generate.organisation import COMMON_APPS, DEPARTMENT_APPS, Account, Organisation
from jobs.generate.seeding import BASE62_TABLE, stable_int
from jobs.generate.stream import BENIGN, SCENARIO, Entry
from jobs.reference.geo import GeoRecord

__all__ = ["IdpEmitter", "alias_for", "user_agent"]

# sessions per working day; one session is ~7.4 events (start, MFA, ~5 SSO, end)
SESSIONS_PER_DAY = {"human": 1.35, "admin": 1.5}
EVENTS_PER_SESSION = 7.4

DISPLAY = {
    "user.session.start": "User login to Okta",
    "user.authentication.sso": "User single sign on to app",
    "user.authentication.auth_via_mfa": "Authentication of user via MFA",
    "user.session.end": "User logout from Okta",
}
LEGACY = {
    ("user.session.start", True): "core.user_auth.login_success",
    ("user.session.start", False): "core.user_auth.login_failed",
    ("user.authentication.sso", True): "app.auth.sso",
    ("user.authentication.sso", False): "app.auth.sso",
    ("user.authentication.auth_via_mfa", True): "core.user.factor.attempt_success",
    ("user.authentication.auth_via_mfa", False): "core.user.factor.attempt_fail",
    ("user.session.end", True): "core.user_auth.logout_success",
    ("user.session.end", False): "core.user_auth.logout_success",
}
URI = {
    "user.session.start": "/idp/idx/identify",
    "user.authentication.sso": "/app/{app}/sso/saml",
    "user.authentication.auth_via_mfa": "/idp/idx/challenge/answer",
    "user.session.end": "/login/signout",
}
# feed variations of Okta's outcome vocabulary (they must all normalize)
SUCCESS_WORDS = (
    ("SUCCESS", 0.90),
    ("success", 0.04),
    ("ALLOW", 0.02),
    ("allowed", 0.02),
    ("granted", 0.02),
)
FAILURE_WORDS = (("FAILURE", 0.85), ("denied", 0.10), ("DENY", 0.05))
OFFSET_SHARE = 0.10
APP_LABELS = dict(
    COMMON_APPS + [x for v in DEPARTMENT_APPS.values() for x in v]
)  # `published` with a local +hh:mm offset instead of Z

AGENTS = {
    "windows_chrome": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Windows 10", "CHROME", "Computer"),
    "windows_edge": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", "Windows 10", "EDGE_CHROMIUM", "Computer"),
    "ios": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "iOS", "SAFARI", "Mobile"),
    "android": ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36", "Android", "CHROME", "Mobile"),
    "python": ("python-requests/2.31.0", "Unknown", "UNKNOWN", "Unknown"),
    "curl": ("curl/8.4.0", "Unknown", "UNKNOWN", "Unknown"),
    "linux_firefox": ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Linux", "FIREFOX", "Computer"),
}  # fmt: skip


def user_agent(name: str) -> dict[str, str]:
    raw, os_name, browser, _ = AGENTS[name]
    return {"rawUserAgent": raw, "os": os_name, "browser": browser}


def alias_for(account: Account, u: float) -> str:
    """The login as typed: mostly the UPN in display casing, sometimes another alias."""
    if u < 0.70:
        return account.upn
    if u < 0.85:
        return account.user_id
    if u < 0.95:
        return account.email
    return account.sam_account


def _pick(words: tuple[tuple[str, float], ...], u: float) -> str:
    acc = 0.0
    for word, share in words:
        acc += share
        if u < acc:
            return word
    return words[0][0]


def apps_for(account: Account) -> list[tuple[str, str]]:
    return list(dict.fromkeys([*COMMON_APPS, *DEPARTMENT_APPS.get(account.department, [])]))


class IdpEmitter:
    """One Okta org: every sign-in of every person, in one file per day."""

    source = "idp"

    def __init__(self, shard: str, org: Organisation) -> None:
        self.shard = shard
        self.org = org
        self._app_ids: dict[str, str] = {}
        self._device_ids: dict[str, str] = {}
        self._geo_json: dict[str, dict[str, object] | None] = {}
        self._zones: dict[str, str] = {}
        self._fragments: dict[tuple[object, ...], str] = {}
        for ips in org.egress.values():
            for ip in ips:
                self._zones[ip] = "Corporate"
        for ips in org.vpn.values():
            for ip in ips:
                self._zones[ip] = "VPN"

    # -- stream protocol -----------------------------------------------------------------

    def files_for_day(self, ctx: DayContext) -> list[str]:
        return [IDP_FILE]

    def header(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def footer(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]:
        org = self.org
        rates = rate_vector(org, SESSIONS_PER_DAY, ctx.scale)
        apps = {a.department: apps_for(a) for a in org.humans}

        def expand(who: int, ts: int, r: list[float], _z: list[float]) -> list[Entry]:
            account = org.accounts[who]
            n_sso = 1 + int(ctx.rng.poisson(4.0))
            return self._session(ctx, account, ts, r, n_sso, apps[account.department])

        # a mistyped password is logged up to 45 s before the session it belongs to
        yield from expand_seeds(ctx, rates, expand, randoms=8, lookback_us=60 * US_PER_SECOND)

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]:
        account = self.org.accounts[int(spec["account"])]  # type: ignore[call-overload]
        line = self.event(
            ctx,
            ts_us,
            event_type=str(spec["event_type"]),
            account=account,
            alias=str(spec.get("alias") or account.upn),
            ip=str(spec["ip"]),
            agent=str(spec.get("agent", "windows_chrome")),
            device=spec.get("device"),  # type: ignore[arg-type]
            success=bool(spec.get("success", True)),
            reason=spec.get("reason"),  # type: ignore[arg-type]
            session=str(spec.get("session") or "102" + ctx.ids.base62(22)),
            app=spec.get("app"),  # type: ignore[arg-type]
            u_vocab=0.0,
            u_offset=1.0,
        )
        return [(ts_us, ctx.next_seq(), IDP_FILE, line[0], SCENARIO, line[1])]

    # -- behaviour -----------------------------------------------------------------------

    def usual_ip(self, account: Account, u: float, local_work_hours: bool) -> str:
        """Office egress in work hours, otherwise home ISP or VPN (all in the home country)."""
        office = self.org.egress[account.site]
        vpn = self.org.vpn[account.site]
        homes = account.home_ips or office
        if local_work_hours:
            if u < 0.62:
                return office[int(u * 1000) % len(office)]
            if u < 0.85:
                return homes[int(u * 1000) % len(homes)]
            return vpn[int(u * 1000) % len(vpn)]
        if u < 0.75:
            return homes[int(u * 1000) % len(homes)]
        return vpn[int(u * 1000) % len(vpn)]

    def known_device(self, account: Account, mobile: bool) -> dict[str, object] | None:
        if mobile and account.mobile_os and len(account.devices) > 1:
            name = account.devices[1]
            platform = "IOS" if account.mobile_os == "iOS" else "ANDROID"
        elif account.devices:
            name = account.devices[0]
            platform = "WINDOWS"
        else:
            return None
        return {
            "id": self.device_id(name),
            "name": name,
            "os_platform": platform,
            "managed": True,
            "registered": True,
        }

    def device_id(self, name: str) -> str:
        """Okta's own id for a registered device (`guo` + 17 base62), stable per org and name."""
        if name not in self._device_ids:
            digest = hashlib.blake2b(f"{self.org.seed}|{name}".encode(), digest_size=17).digest()
            self._device_ids[name] = "guo" + digest.translate(BASE62_TABLE).decode("ascii")
        return self._device_ids[name]

    def _session(
        self,
        ctx: DayContext,
        account: Account,
        ts: int,
        r: list[float],
        n_sso: int,
        apps: list[tuple[str, str]],
    ) -> list[Entry]:
        offset = site_offset(account, ts)
        local_hour = ((ts // US_PER_SECOND + offset) // 3600) % 24
        work = account.work_start <= local_hour < account.work_end
        mobile = bool(r[1] < 0.25 and account.mobile_os)
        ip = self.usual_ip(account, float(r[0]), work)
        device = self.known_device(account, mobile)
        agent = (
            ("ios" if account.mobile_os == "iOS" else "android")
            if mobile
            else ("windows_chrome" if r[2] < 0.7 else "windows_edge")
        )
        alias = alias_for(account, float(r[3]))
        session = "102" + ctx.ids.base62(22)
        out: list[Entry] = []
        u = ctx.rng.random((n_sso + 4, 2))
        k = 0

        def add(
            at: int,
            event_type: str,
            success: bool = True,
            reason: str | None = None,
            app: str | None = None,
        ) -> None:
            nonlocal k
            line, key = self.event(
                ctx, at, event_type=event_type, account=account, alias=alias, ip=ip, agent=agent,
                device=device, success=success, reason=reason, session=session, app=app,
                u_vocab=float(u[k, 0]), u_offset=float(u[k, 1]),
            )  # fmt: skip
            k += 1
            out.append((at, ctx.next_seq(), IDP_FILE, line, BENIGN, key))

        t = ts
        if r[4] < 0.03:  # a mistyped password first
            add(
                t - int(5 + r[5] * 40) * US_PER_SECOND,
                "user.session.start",
                False,
                "INVALID_CREDENTIALS",
            )
        add(t, "user.session.start")
        if r[6] < 0.8:
            add(t + int(4 + r[5] * 25) * US_PER_SECOND, "user.authentication.auth_via_mfa")
        gaps = np.sort(ctx.rng.integers(30, 40 * 60, size=n_sso))
        for j in range(n_sso):
            app = apps[int(u[j, 0] * 7919) % len(apps)][0]
            add(t + int(gaps[j]) * US_PER_SECOND, "user.authentication.sso", app=app)
        if r[7] < 0.6:
            add(t + int(3600 + r[5] * 3 * 3600) * US_PER_SECOND, "user.session.end")
        return out

    # -- format --------------------------------------------------------------------------

    def _geo(self, ctx: DayContext, ip: str) -> dict[str, object] | None:
        if ip not in self._geo_json:
            rec: GeoRecord | None = ctx.geo(ip)
            if rec is None:
                self._geo_json[ip] = None
            else:
                self._geo_json[ip] = {
                    "city": rec.city,
                    "state": rec.subdivision,
                    "country": rec.country_name,
                    "postalCode": None,
                    "geolocation": {"lat": rec.latitude, "lon": rec.longitude},
                }
        return self._geo_json[ip]

    def app_id(self, app: str) -> str:
        if app not in self._app_ids:
            self._app_ids[app] = (
                f"0oa{stable_int(('app', app)):010x}{stable_int(app) % 9999999:07d}"
            )
        return self._app_ids[app]

    def event(
        self,
        ctx: DayContext,
        ts_us: int,
        *,
        event_type: str,
        account: Account,
        alias: str,
        ip: str,
        agent: str,
        device: dict[str, object] | None,
        success: bool,
        reason: str | None,
        session: str,
        app: str | None,
        u_vocab: float,
        u_offset: float,
    ) -> tuple[str, str]:
        """One System Log event as Okta's API returns it; returns (line, uuid).

        The parts that repeat (actor, client + geo, device, target) are encoded once and
        reused; only ids, time, outcome and session change per line.
        """
        uuid = ctx.ids.uuid4()
        result = _pick(SUCCESS_WORDS if success else FAILURE_WORDS, u_vocab)
        published = (
            iso_offset_ms(ts_us, site_offset(account, ts_us))
            if u_offset < OFFSET_SHARE
            else iso_utc_ms(ts_us)
        )
        actor = self._fragment(("actor", account.index, alias), lambda: {
            "id": account.okta_id, "type": "User", "alternateId": alias,
            "displayName": account.display_name, "detailEntry": None})  # fmt: skip
        client = self._fragment(("client", ip, agent), lambda: self._client(ctx, ip, agent))
        security = self._fragment(("security", ip), lambda: self._security(ctx, ip))
        if device is None:
            device_part = ""
        else:
            device_part = (
                '"device":'
                + self._fragment(
                    ("device", str(device.get("id")), str(device.get("name"))), lambda: device
                )
                + ","
            )
        if app is not None:
            label = APP_LABELS.get(app, app)
            target = self._fragment(("app", app), lambda: [
                {"id": self.app_id(app), "type": "AppInstance", "alternateId": label, "displayName": label,
                 "detailEntry": {"signOnModeType": "SAML_2_0"}}])  # fmt: skip
        elif event_type == "user.authentication.auth_via_mfa":
            target = self._fragment(("mfa", account.index), lambda: [
                {"id": "pfd" + account.okta_id[3:], "type": "AuthenticatorEnrollment", "alternateId": "unknown",
                 "displayName": "Okta Verify", "detailEntry": {"methodTypeUsed": "Push"}}])  # fmt: skip
        else:
            target = "null"
        reason_part = "null" if reason is None else json.dumps(reason)
        line = (
            f'{{"uuid":"{uuid}","published":"{published}","eventType":"{event_type}","version":"0",'
            f'"severity":"{"INFO" if success else "WARN"}","legacyEventType":"{LEGACY[(event_type, success)]}",'
            f'"displayMessage":"{DISPLAY[event_type]}","actor":{actor},"client":{client},{device_part}'
            f'"outcome":{{"result":"{result}","reason":{reason_part}}},"target":{target},'
            f'"transaction":{{"type":"WEB","id":"{ctx.ids.base62(20)}","detail":{{}}}},'
            f'"debugContext":{{"debugData":{{"requestId":"{ctx.ids.base62(24)}",'
            f'"requestUri":"{URI[event_type].format(app=app or "")}","threatSuspected":"false"}}}},'
            f'"authenticationContext":{{"authenticationProvider":null,"credentialProvider":null,'
            f'"credentialType":null,"issuer":null,"interface":null,"authenticationStep":0,'
            f'"externalSessionId":"{session}"}},"securityContext":{security}}}'
        )
        return line, uuid

    def _fragment(self, key: tuple[object, ...], build: Callable[[], object]) -> str:
        text = self._fragments.get(key)
        if text is None:
            text = json.dumps(build(), separators=(",", ":"))
            self._fragments[key] = text
        return text

    def _client(self, ctx: DayContext, ip: str, agent: str) -> dict[str, object]:
        raw, os_name, browser, client_device = AGENTS[agent]
        return {
            "userAgent": {"rawUserAgent": raw, "os": os_name, "browser": browser},
            "zone": self._zones.get(ip, "null"),
            "device": client_device,
            "id": None,
            "ipAddress": ip,
            "geographicalContext": self._geo(ctx, ip),
        }

    def _security(self, ctx: DayContext, ip: str) -> dict[str, object]:
        rec = ctx.geo(ip)
        return {
            "asNumber": rec.asn if rec else None,
            "asOrg": rec.as_org if rec else None,
            "isp": rec.as_org if rec else None,
            "domain": None,
            "isProxy": False,
        }
