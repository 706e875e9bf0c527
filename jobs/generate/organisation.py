"""The synthetic organisation: sites, people, accounts, hosts and the networks they use.

Everything the feeds mention comes from here, so the reference files the pipeline joins
against (`identity_directory.csv`, `asset_inventory.csv`, `network_ranges.csv`) describe
exactly the accounts, hosts and egress ranges that appear in the telemetry.
Public addresses are real ones the geo database places in the right country.
"""

from __future__ import annotations

import csv
import functools
import ipaddress
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from jobs.generate.seeding import derive_rng
from jobs.reference.geo import GeoResolver, country_ip_pools, default_resolver, haversine_km

__all__ = [
    "ASSET_COLUMNS",
    "DIRECTORY_COLUMNS",
    "DOMAIN",
    "FOREIGN_COUNTRIES",
    "NETWORK_RANGE_COLUMNS",
    "SITES",
    "Account",
    "Asset",
    "Organisation",
    "Site",
    "build_organisation",
    "write_reference",
]

DOMAIN = "corp.example"
MAIL_DOMAIN = "corp-mail.example"
NETBIOS = "CORP"
AWS_ACCOUNT = "123456789012"

DIRECTORY_COLUMNS = (
    "user_id", "display_name", "upn", "sam_account", "email", "aliases", "department", "role",
    "peer_group", "account_type", "privileged", "home_country", "home_city", "timezone",
    "work_start_hour", "work_end_hour", "devices", "manager", "created",
)  # fmt: skip
ASSET_COLUMNS = (
    "asset_id", "fqdn", "ip", "asset_type", "os", "criticality", "tags", "owner", "site",
    "timezone",
)  # fmt: skip
NETWORK_RANGE_COLUMNS = ("cidr", "kind", "site", "country")


@dataclass(frozen=True)
class Site:
    code: str
    city: str
    country: str
    timezone: str
    latitude: float
    longitude: float
    share: float
    octet: int  # internal space is 10.<octet + n>.x.x


SITES: tuple[Site, ...] = (
    Site("nyc", "New York", "US", "America/New_York", 40.7128, -74.0060, 0.45, 0),
    Site("lon", "London", "GB", "Europe/London", 51.5074, -0.1278, 0.25, 50),
    Site("ber", "Berlin", "DE", "Europe/Berlin", 52.5200, 13.4050, 0.15, 100),
    Site("blr", "Bangalore", "IN", "Asia/Kolkata", 12.9716, 77.5946, 0.15, 150),
)

# Far-away countries attackers and travellers appear from (none is a site country).
FOREIGN_COUNTRIES = (
    "BR", "NG", "RU", "CN", "VN", "ID", "AU", "JP", "ZA", "AR", "KR", "SG", "TR", "UA", "RO",
    "MX", "CO", "EG", "PK", "TH",
)  # fmt: skip
# Where the SaaS and CDN endpoints users talk to are hosted.
SERVICE_COUNTRIES = ("US", "IE", "NL", "DE", "GB", "FR")

# department -> (share of staff, [(role, share)])
DEPARTMENTS: dict[str, tuple[float, list[tuple[str, float]]]] = {
    "engineering": (0.28, [("software_engineer", 0.68), ("devops_engineer", 0.22), ("engineering_manager", 0.10)]),
    "sales": (0.17, [("account_executive", 0.70), ("sales_engineer", 0.20), ("sales_manager", 0.10)]),
    "marketing": (0.09, [("marketing_specialist", 0.85), ("marketing_manager", 0.15)]),
    "finance": (0.11, [("financial_analyst", 0.60), ("accountant", 0.30), ("finance_manager", 0.10)]),
    "hr": (0.07, [("hr_partner", 0.60), ("recruiter", 0.30), ("hr_manager", 0.10)]),
    "it": (0.09, [("it_support", 0.55), ("sysadmin", 0.45)]),
    "legal": (0.04, [("counsel", 0.80), ("legal_manager", 0.20)]),
    "operations": (0.15, [("operations_specialist", 0.85), ("operations_manager", 0.15)]),
}  # fmt: skip
ADMIN_ROLES = ("sysadmin",)
CLOUD_ROLES = ("devops_engineer", "sysadmin")

# Okta apps per department (name, label); everyone also uses the common ones.
COMMON_APPS = [("office365", "Microsoft Office 365"), ("slack", "Slack"), ("zoom", "Zoom")]
DEPARTMENT_APPS: dict[str, list[tuple[str, str]]] = {
    "engineering": [("github", "GitHub Enterprise"), ("jira", "Jira Software"), ("confluence", "Confluence"), ("aws", "AWS IAM Identity Center")],
    "sales": [("salesforce", "Salesforce.com"), ("gong", "Gong"), ("docusign", "DocuSign")],
    "marketing": [("hubspot", "HubSpot"), ("canva", "Canva"), ("salesforce", "Salesforce.com")],
    "finance": [("netsuite", "Oracle NetSuite"), ("workday", "Workday"), ("expensify", "Expensify")],
    "hr": [("workday", "Workday"), ("greenhouse", "Greenhouse"), ("docusign", "DocuSign")],
    "it": [("servicenow", "ServiceNow"), ("aws", "AWS IAM Identity Center"), ("okta_admin", "Okta Admin Console")],
    "legal": [("docusign", "DocuSign"), ("ironclad", "Ironclad")],
    "operations": [("servicenow", "ServiceNow"), ("netsuite", "Oracle NetSuite")],
}  # fmt: skip

FIRST_NAMES = {
    "US": "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Ashley Steven Emily Andrew Megan Kevin Rachel Brian Laura Jason Amy Ryan Nicole",
    "GB": "Oliver Amelia George Isla Harry Ava Jack Mia Charlie Grace Thomas Sophie Oscar Lily Henry Freya William Emily Alfie Poppy Leo Evie Arthur Ella Alexander Rosie Edward Alice Samuel Chloe",
    "DE": "Lukas Anna Leon Lena Finn Lea Jonas Hannah Paul Mia Felix Emma Elias Sophie Max Laura Noah Marie Ben Julia Tim Katharina Jan Lisa Niklas Johanna Moritz Clara Tobias Sarah",
    "IN": "Aarav Ananya Vivaan Diya Aditya Isha Arjun Priya Sai Kavya Rohan Sneha Karthik Pooja Rahul Neha Vikram Divya Arun Meera Siddharth Lakshmi Nikhil Shreya Varun Aditi Manish Swati Rajesh Anjali",
}  # fmt: skip
LAST_NAMES = {
    "US": "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Walker Hall Young Allen King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts",
    "GB": "Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper Hill Ward Hughes",
    "DE": "Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter Klein Wolf Schroeder Neumann Schwarz Braun Zimmermann Krueger Hofmann Hartmann Lange Werner Krause Lehmann Koehler Maier Herrmann Koenig",
    "IN": "Sharma Verma Gupta Kumar Singh Patel Reddy Nair Iyer Rao Menon Pillai Joshi Mehta Shah Desai Kulkarni Bhat Chatterjee Banerjee Das Mukherjee Agarwal Malhotra Kapoor Chopra Saxena Mishra Pandey Krishnan",
}  # fmt: skip

SERVICE_ACCOUNT_NAMES = (
    "svc-backup", "svc-deploy", "svc-etl", "svc-monitoring", "svc-ci", "svc-reporting",
    "svc-sync", "svc-patching", "svc-scanner", "svc-sql",
)  # fmt: skip
# SaaS/CDN domains workstations resolve and connect to (dept-specific ones weigh more).
COMMON_DOMAINS = (
    "outlook.office365.com", "login.microsoftonline.com", "teams.microsoft.com",
    "www.google.com", "slack.com", "zoom.us", "corp.okta.com", "update.microsoft.com",
    "ctldl.windowsupdate.com", "www.bing.com", "fonts.googleapis.com", "cdn.jsdelivr.net",
    "ocsp.digicert.com", "www.linkedin.com", "edge.microsoft.com", "clients4.google.com",
    "s3.amazonaws.com", "graph.microsoft.com", "www.youtube.com", "api.github.com",
)  # fmt: skip
DEPARTMENT_DOMAINS: dict[str, tuple[str, ...]] = {
    "engineering": ("github.com", "registry.npmjs.org", "pypi.org", "files.pythonhosted.org", "docker.io", "corp.atlassian.net", "stackoverflow.com"),
    "sales": ("corp.my.salesforce.com", "app.gong.io", "www.docusign.net", "www.linkedin.com"),
    "marketing": ("app.hubspot.com", "www.canva.com", "analytics.google.com", "corp.my.salesforce.com"),
    "finance": ("corp.netsuite.com", "wd5.myworkday.com", "www.expensify.com"),
    "hr": ("wd5.myworkday.com", "app.greenhouse.io", "www.docusign.net"),
    "it": ("corp.service-now.com", "console.aws.amazon.com", "corp-admin.okta.com", "github.com"),
    "legal": ("www.docusign.net", "app.ironcladapp.com"),
    "operations": ("corp.service-now.com", "corp.netsuite.com"),
}  # fmt: skip


@dataclass
class Account:
    """One directory row (a person, an admin, a service account or a break-glass account)."""

    index: int
    user_id: str
    display_name: str
    upn: str  # display casing, e.g. Jane.Doe@corp.example
    sam: str  # jdoe
    email: str
    department: str
    role: str
    account_type: str  # human | admin | service | break_glass
    privileged: bool
    site: int
    work_start: int
    work_end: int
    devices: list[str]
    manager: str
    created: date
    okta_id: str
    workstation: int  # asset index, -1 when none
    mobile_os: str  # "" when no mobile device
    home_ips: list[str]
    cloud: bool
    linux: bool
    bytes_mu: float  # log-mean of bytes sent per external connection
    origin: int = -1  # service accounts: the server their jobs run from (asset index)

    @property
    def sam_account(self) -> str:
        return f"{NETBIOS}\\{self.sam}"

    @property
    def peer_group(self) -> str:
        return f"{self.department}/{self.role}"

    def aliases(self) -> list[str]:
        """Every spelling of this account a feed may use."""
        out = [self.user_id, self.upn, self.sam_account, self.sam, self.email]
        return list(dict.fromkeys(out))


@dataclass
class Asset:
    index: int
    asset_id: str
    fqdn: str
    ip: str
    asset_type: str
    os: str
    criticality: str
    tags: list[str]
    owner: str
    site: int
    department: str  # "" for shared infrastructure
    role: str  # dc, file, app, web, db, bastion, rdgw, workstation

    @property
    def windows(self) -> bool:
        return self.os.startswith("Windows")

    @property
    def hostname(self) -> str:
        """NetBIOS-style upper-case name as Windows events spell it."""
        return self.asset_id.upper()


@dataclass
class Organisation:
    seed: int
    start: date
    accounts: list[Account]
    assets: list[Asset]
    egress: dict[int, list[str]]  # site -> corporate egress addresses in use
    vpn: dict[int, list[str]]  # site -> VPN concentrator addresses
    ranges: list[tuple[str, str, str, str]]  # cidr, kind, site, country
    foreign_ips: dict[str, list[str]]  # country -> public addresses (attack / travel)
    service_ips: dict[str, list[str]]  # domain -> addresses it resolves to
    noise_ips: list[str]  # internet scanners behind sshd brute-force noise
    site_assets: dict[tuple[int, str], list[int]] = field(default_factory=dict)

    @property
    def humans(self) -> list[Account]:
        return [a for a in self.accounts if a.account_type in ("human", "admin")]

    def accounts_of_type(self, *types: str) -> list[Account]:
        return [a for a in self.accounts if a.account_type in types]

    def servers(self, site: int, role: str) -> list[Asset]:
        return [self.assets[i] for i in self.site_assets.get((site, role), [])]

    def asset_by_id(self) -> dict[str, Asset]:
        return {a.asset_id: a for a in self.assets}

    def usual_file_servers(self, account: Account) -> list[Asset]:
        """The department file servers an account normally maps drives from (own site)."""
        servers = [
            s for s in self.servers(account.site, "file") if s.department == account.department
        ]
        if not servers:
            return []
        first = account.index % len(servers)
        picks = [servers[first]]
        if len(servers) > 1 and account.index % 3 == 0:
            picks.append(servers[(first + 1) % len(servers)])
        return picks

    def usual_windows_hosts(self, account: Account) -> list[Asset]:
        """Hosts an account logs on to in normal work: never targets of lateral movement."""
        hosts: list[Asset] = []
        if account.workstation >= 0:
            hosts.append(self.assets[account.workstation])
        hosts.extend(self.servers(account.site, "dc"))
        hosts.extend(self.usual_file_servers(account))
        if account.account_type == "admin":
            hosts.extend(self.windows_servers(account.site))
        return list({h.asset_id: h for h in hosts}.values())

    def windows_servers(self, site: int) -> list[Asset]:
        return [
            self.assets[i]
            for role in ("dc", "rdgw", "file", "db")
            for i in self.site_assets.get((site, role), [])
            if self.assets[i].windows
        ]

    def linux_servers(self, site: int) -> list[Asset]:
        return [
            self.assets[i]
            for role in ("bastion", "app", "web", "db")
            for i in self.site_assets.get((site, role), [])
            if not self.assets[i].windows
        ]


def _largest_remainder(total: int, shares: list[float]) -> list[int]:
    raw = [total * s / sum(shares) for s in shares]
    counts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _base62(rng: np.random.Generator, length: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[i] for i in rng.integers(0, 62, size=length).tolist())


def _internal_ip(site: Site, block: int, n: int) -> str:
    """n-th host address in 10.<site.octet + block>.0.0/16, skipping .0 and .255."""
    third, host = divmod(n, 254)
    second = site.octet + block + third // 256
    return f"10.{second}.{third % 256}.{host + 1}"


LOCAL_RADIUS_KM = 150.0  # office, VPN and home addresses of a site all geolocate this close


def _nearest(pool: list[str], resolver: GeoResolver, site: Site, k: int) -> list[str]:
    """Up to `k` addresses the DB places within LOCAL_RADIUS_KM of the site, nearest first.

    Random public addresses rarely land near one city, so the search also probes the
    neighbourhood of the nearest finds (providers allocate per region): a commuter's home
    ISP and the office egress are then never an implausible journey apart.
    """
    found: dict[str, float] = {}

    def consider(ip: str) -> None:
        rec = resolver.lookup(ip, with_asn=False)
        if (
            rec is None
            or rec.latitude is None
            or rec.longitude is None
            or rec.country != site.country
        ):
            return
        if not rec.city:
            return
        km = haversine_km(site.latitude, site.longitude, rec.latitude, rec.longitude)
        if km <= LOCAL_RADIUS_KM:
            found[ip] = km

    for ip in pool:
        consider(ip)
    ranked = sorted(pool, key=lambda ip: _distance(resolver, site, ip))
    seeds = (sorted(found, key=lambda ip: (found[ip], ip)) or ranked)[:8]
    for base in seeds:
        if len(found) >= k:
            break
        base_int = int(ipaddress.IPv4Address(base))
        for step in range(1, 129):
            candidate = base_int + step * 997 * (1 if step % 2 else -1)
            if 1 << 24 <= candidate < 224 << 24:
                consider(str(ipaddress.IPv4Address(candidate)))
            if len(found) >= k:
                break
    near = sorted(found, key=lambda ip: (found[ip], ip))[:k]
    return near or ranked[:k]


def _distance(resolver: GeoResolver, site: Site, ip: str) -> float:
    rec = resolver.lookup(ip, with_asn=False)
    if rec is None or rec.latitude is None or rec.longitude is None or rec.country != site.country:
        return float("inf")
    return haversine_km(site.latitude, site.longitude, rec.latitude, rec.longitude)


def _site_networks(
    resolver: GeoResolver, site: Site, candidates: list[str], used: set[str]
) -> list[ipaddress.IPv4Network]:
    """Two /28s (egress, VPN) whose whole range sits in one geo-DB network near the site."""
    nets: list[ipaddress.IPv4Network] = []
    for ip in candidates:
        db_net = resolver.network(ip)
        if db_net is None:
            continue
        parent = ipaddress.ip_network(db_net)
        if parent.prefixlen > 28 or parent.version != 4:
            continue
        net = ipaddress.ip_network(f"{ip}/28", strict=False)
        if str(net) in used:
            continue
        used.add(str(net))
        nets.append(net)  # type: ignore[arg-type]
        if len(nets) == 2:
            break
    if len(nets) < 2:
        raise RuntimeError(f"geo database gave no usable egress range for site {site.code}")
    return nets


@functools.lru_cache(maxsize=8)
def _cached_pools(
    seed: int, database: str, asn_database: str | None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    resolver = _POOL_RESOLVERS[(database, asn_database)]
    site = country_ip_pools([s.country for s in SITES], 160, seed, resolver)
    other = country_ip_pools(
        list(dict.fromkeys([*FOREIGN_COUNTRIES, *SERVICE_COUNTRIES])), 60, seed + 1, resolver
    )
    return site, other


_POOL_RESOLVERS: dict[tuple[str, str | None], GeoResolver] = {}


def _address_pools(
    seed: int, resolver: GeoResolver
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Site-country and foreign address pools (probing the DB costs ~1 s; cached per seed)."""
    key = (resolver.database_path, resolver.asn_database_path)
    _POOL_RESOLVERS.setdefault(key, resolver)
    site, other = _cached_pools(seed, *key)
    return {k: list(v) for k, v in site.items()}, {k: list(v) for k, v in other.items()}


def build_organisation(
    users: int, seed: int, start: date, resolver: GeoResolver | None = None
) -> Organisation:
    """A deterministic organisation of `users` people plus service and break-glass accounts."""
    if users < 1:
        raise ValueError("users must be >= 1")
    resolver = resolver or default_resolver()
    rng = derive_rng(seed, "organisation")

    site_pools, other_pools = _address_pools(seed, resolver)

    # -- public networks of each site: egress + VPN /28s and home ISP addresses near it
    egress: dict[int, list[str]] = {}
    vpn: dict[int, list[str]] = {}
    ranges: list[tuple[str, str, str, str]] = []
    home_pool: dict[int, list[str]] = {}
    used: set[str] = set()
    for si, site in enumerate(SITES):
        near = _nearest(site_pools[site.country], resolver, site, 80)
        egress_net, vpn_net = _site_networks(resolver, site, near, used)
        ranges.append((str(egress_net), "corporate_egress", site.code, site.country))
        ranges.append((str(vpn_net), "vpn", site.code, site.country))
        egress[si] = [str(egress_net.network_address + k) for k in (1, 2, 3, 4)]
        vpn[si] = [str(vpn_net.network_address + k) for k in (1, 2)]
        home_pool[si] = [
            ip
            for ip in near
            if not any(ipaddress.ip_address(ip) in n for n in (egress_net, vpn_net))
        ][:50]

    # -- people
    dept_names = list(DEPARTMENTS)
    dept_counts = _largest_remainder(users, [DEPARTMENTS[d][0] for d in dept_names])
    if users >= 10:  # small orgs still need engineers and IT (cloud, admins)
        for needed in ("it", "engineering"):
            i = dept_names.index(needed)
            if dept_counts[i] < 2:
                donor = max(range(len(dept_counts)), key=lambda j: (dept_counts[j], -j))
                dept_counts[donor] -= 2 - dept_counts[i]
                dept_counts[i] = 2
    slots: list[tuple[str, str]] = []
    for dept, count in zip(dept_names, dept_counts, strict=True):
        roles = DEPARTMENTS[dept][1]
        role_counts = _largest_remainder(count, [r[1] for r in roles])
        if dept == "it" and count >= 2 and role_counts[1] == 0:
            role_counts = [count - 1, 1]
        if dept == "engineering" and count >= 2 and role_counts[1] == 0:
            role_counts[0] -= 1
            role_counts[1] = 1
        for (role, _), rc in zip(roles, role_counts, strict=True):
            slots.extend([(dept, role)] * rc)
    order = rng.permutation(len(slots))
    slots = [slots[i] for i in order.tolist()]
    site_of = np.repeat(np.arange(len(SITES)), _largest_remainder(users, [s.share for s in SITES]))
    site_of = site_of[rng.permutation(users)]

    accounts: list[Account] = []
    assets: list[Asset] = []
    upns: dict[str, int] = {}
    sams: dict[str, int] = {}

    def unique(base: str, taken: dict[str, int]) -> str:
        n = taken.get(base, 0) + 1
        taken[base] = n
        return base if n == 1 else f"{base}{n}"

    ws_count = [0] * len(SITES)
    start_hours = np.array([7, 8, 8, 9, 9, 9, 10])
    first_lists = {c: v.split() for c, v in FIRST_NAMES.items()}
    last_lists = {c: v.split() for c, v in LAST_NAMES.items()}
    first_draw = rng.integers(0, 1 << 30, size=users).tolist()
    last_draw = rng.integers(0, 1 << 30, size=users).tolist()
    mobile_draw = rng.random(users).tolist()
    ios_draw = rng.random(users).tolist()
    start_draw = rng.choice(start_hours, size=users).tolist()
    created_draw = rng.integers(60, 2500, size=users).tolist()
    home_draw = rng.integers(0, 1 << 30, size=(users, 2)).tolist()
    second_home = (rng.random(users) < 0.3).tolist()
    mu_draw = rng.normal(8.8, 0.6, size=users).tolist()
    alphabet62 = np.frombuffer(
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8
    )
    alphabet36 = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    mobile_ids = [
        b.decode()
        for b in alphabet36[rng.integers(0, 36, size=(users, 8))].view("S8").ravel().tolist()
    ]
    okta_ids = [
        b.decode()
        for b in alphabet62[rng.integers(0, 62, size=(users, 17))].view("S17").ravel().tolist()
    ]
    for i, (dept, role) in enumerate(slots):
        si = int(site_of[i])
        site = SITES[si]
        firsts, lasts = first_lists[site.country], last_lists[site.country]
        first = firsts[first_draw[i] % len(firsts)]
        last = lasts[last_draw[i] % len(lasts)]
        local = unique(f"{first}.{last}".lower(), upns)
        suffix = local[len(f"{first}.{last}") :]
        sam = unique(f"{first[0]}{last}".lower()[:18], sams)
        is_admin = role in ADMIN_ROLES
        ws_count[si] += 1
        ws_id = f"ws-{site.code}-{ws_count[si]:05d}"
        devices = [ws_id]
        mobile_os = ""
        if mobile_draw[i] < 0.6:
            mobile_os = "iOS" if ios_draw[i] < 0.6 else "Android"
            devices.append("mob-" + mobile_ids[i])
        work_start = int(start_draw[i]) + (1 if site.country == "IN" else 0)
        pool = home_pool[si]
        homes = [pool[home_draw[i][0] % len(pool)]]
        if second_home[i] and len(pool) > 1:
            other = pool[home_draw[i][1] % len(pool)]
            if other != homes[0]:
                homes.append(other)
        account = Account(
            index=len(accounts),
            user_id=f"{local}@{DOMAIN}",
            display_name=f"{first} {last}{suffix}",
            upn=f"{first}.{last}{suffix}@{DOMAIN}",
            sam=sam,
            email=f"{sam}@{MAIL_DOMAIN}",
            department=dept,
            role=role,
            account_type="admin" if is_admin else "human",
            privileged=is_admin,
            site=si,
            work_start=work_start,
            work_end=min(work_start + 9, 21),
            devices=devices,
            manager="",
            created=start - timedelta(days=int(created_draw[i])),
            okta_id="00u" + okta_ids[i],
            workstation=-1,
            mobile_os=mobile_os,
            home_ips=homes,
            cloud=role in CLOUD_ROLES,
            linux=is_admin or role == "devops_engineer",
            bytes_mu=float(mu_draw[i]),
        )
        accounts.append(account)

    # managers: someone with a *_manager role in the same department, same site preferred
    managers: dict[str, list[Account]] = {}
    local_managers: dict[tuple[str, int], list[Account]] = {}
    for a in accounts:
        if a.role.endswith("_manager"):
            managers.setdefault(a.department, []).append(a)
            local_managers.setdefault((a.department, a.site), []).append(a)
    for a in accounts:
        bosses = local_managers.get((a.department, a.site)) or managers.get(a.department) or []
        if a.role.endswith("_manager"):
            peers = managers.get(a.department, [])
            bosses = [peers[0]] if peers and peers[0] is not a else peers[1:2]
        if bosses:
            a.manager = bosses[a.index % len(bosses)].user_id

    # -- hosts
    def add_asset(
        asset_id: str, si: int, block: int, n: int, asset_type: str, os_name: str,
        criticality: str, tags: list[str], owner: str, department: str, role: str,
    ) -> Asset:  # fmt: skip
        asset = Asset(
            index=len(assets),
            asset_id=asset_id,
            fqdn=f"{asset_id}.{DOMAIN}",
            ip=_internal_ip(SITES[si], block, n),
            asset_type=asset_type,
            os=os_name,
            criticality=criticality,
            tags=tags,
            owner=owner,
            site=si,
            department=department,
            role=role,
        )
        assets.append(asset)
        return asset

    site_users = [0] * len(SITES)
    site_dept_users: dict[tuple[int, str], int] = {}
    for a in accounts:
        site_users[a.site] += 1
        site_dept_users[(a.site, a.department)] = site_dept_users.get((a.site, a.department), 0) + 1
    for si, site in enumerate(SITES):
        n = 0
        for k in range(2 if si == 0 else 1):
            add_asset(
                f"dc{k + 1:02d}-{site.code}",
                si,
                0,
                n,
                "domain_controller",
                "Windows Server 2022",
                "critical",
                ["tier0", "ad", "dns"],
                "it-infrastructure",
                "",
                "dc",
            )
            n += 1
        add_asset(
            f"rdgw-{site.code}-01",
            si,
            0,
            n,
            "jump_host",
            "Windows Server 2022",
            "high",
            ["internet-facing", "rdp-gateway"],
            "it-infrastructure",
            "",
            "rdgw",
        )
        n += 1
        add_asset(
            f"bastion-{site.code}-01",
            si,
            0,
            n,
            "jump_host",
            "Ubuntu 22.04 LTS",
            "high",
            ["internet-facing", "ssh"],
            "it-infrastructure",
            "",
            "bastion",
        )
        n += 1
        for dept in dept_names:
            dept_users = site_dept_users.get((si, dept), 0)
            if dept_users == 0:
                continue
            for k in range(min(1 + dept_users // 400, 20)):
                tags = (
                    ["file-share"]
                    + (["pci"] if dept == "finance" else [])
                    + (["pii"] if dept == "hr" else [])
                )
                crit = "high" if dept in ("finance", "hr", "legal") else "medium"
                add_asset(
                    f"fs-{site.code}-{dept[:3]}{k + 1:02d}",
                    si,
                    0,
                    n,
                    "server",
                    "Windows Server 2019",
                    crit,
                    tags,
                    f"{dept}-it",
                    dept,
                    "file",
                )
                n += 1
        for k in range(min(max(2, site_users[si] // 250), 60)):
            add_asset(
                f"app-{site.code}-{k + 1:02d}",
                si,
                0,
                n,
                "server",
                "Ubuntu 22.04 LTS",
                "medium",
                ["app"],
                "engineering",
                "engineering",
                "app",
            )
            n += 1
        add_asset(
            f"web-{site.code}-01",
            si,
            0,
            n,
            "server",
            "Ubuntu 22.04 LTS",
            "high",
            ["internet-facing", "web"],
            "engineering",
            "engineering",
            "web",
        )
        n += 1
        add_asset(
            f"db-{site.code}-fin01",
            si,
            0,
            n,
            "database",
            "Windows Server 2022",
            "critical",
            ["pci", "crown-jewel", "mssql"],
            "finance-it",
            "finance",
            "db",
        )
        n += 1
        add_asset(
            f"db-{site.code}-app01",
            si,
            0,
            n,
            "database",
            "Ubuntu 22.04 LTS",
            "critical",
            ["crown-jewel", "postgres", "customer-data"],
            "engineering",
            "engineering",
            "db",
        )
        n += 1
    for a in accounts:
        site = SITES[a.site]
        ws_id = a.devices[0]
        number = int(ws_id.rsplit("-", 1)[1]) - 1
        tags = ["laptop"] if number % 2 else []
        if a.privileged:
            tags.append("admin-workstation")
        ws = add_asset(
            ws_id,
            a.site,
            1,
            number,
            "workstation",
            "Windows 11 Enterprise",
            "medium" if a.privileged else "low",
            tags,
            a.user_id,
            a.department,
            "workstation",
        )
        a.workstation = ws.index

    site_assets: dict[tuple[int, str], list[int]] = {}
    for asset in assets:
        site_assets.setdefault((asset.site, asset.role), []).append(asset.index)

    # -- service and break-glass accounts
    n_service = min(max(3, users // 40), 60)
    for k in range(n_service):
        base = SERVICE_ACCOUNT_NAMES[k % len(SERVICE_ACCOUNT_NAMES)]
        name = (
            base
            if k < len(SERVICE_ACCOUNT_NAMES)
            else f"{base}{k // len(SERVICE_ACCOUNT_NAMES) + 1:02d}"
        )
        si = k % len(SITES)
        accounts.append(
            Account(
                index=len(accounts),
                user_id=f"{name}@{DOMAIN}",
                display_name=f"Service account {name}",
                upn=f"{name}@{DOMAIN}",
                sam=name,
                email=f"{name}@{MAIL_DOMAIN}",
                department="it" if k % 3 else "engineering",
                role="service",
                account_type="service",
                privileged=name.startswith("svc-backup"),
                site=si,
                work_start=0,
                work_end=24,
                devices=[],
                manager="",
                created=start - timedelta(days=int(rng.integers(400, 3000))),
                okta_id="00u" + _base62(rng, 17),
                workstation=-1,
                mobile_os="",
                home_ips=[],
                cloud=not name.startswith("svc-backup"),
                linux=True,
                bytes_mu=float(rng.normal(9.0, 0.5)),
            )
        )
    for a in accounts:
        if a.account_type == "service":
            apps = site_assets.get((a.site, "app"), [])
            a.origin = apps[a.index % len(apps)] if apps else -1
    for k in range(2):
        name = f"breakglass{k + 1:02d}"
        accounts.append(
            Account(
                index=len(accounts),
                user_id=f"{name}@{DOMAIN}",
                display_name=f"Break-glass account {k + 1}",
                upn=f"{name}@{DOMAIN}",
                sam=name,
                email=f"{name}@{MAIL_DOMAIN}",
                department="it",
                role="break_glass",
                account_type="break_glass",
                privileged=True,
                site=0,
                work_start=0,
                work_end=24,
                devices=[],
                manager="",
                created=start - timedelta(days=int(rng.integers(400, 3000))),
                okta_id="00u" + _base62(rng, 17),
                workstation=-1,
                mobile_os="",
                home_ips=[],
                cloud=False,
                linux=False,
                bytes_mu=0.0,
            )
        )

    # -- internet: SaaS endpoints, far countries, scanners
    service_ips: dict[str, list[str]] = {}
    service_pool = [ip for c in SERVICE_COUNTRIES for ip in other_pools[c]]
    all_domains = list(
        dict.fromkeys([*COMMON_DOMAINS, *(d for ds in DEPARTMENT_DOMAINS.values() for d in ds)])
    )
    for k, domain in enumerate(all_domains):
        service_ips[domain] = [
            service_pool[(7 * k) % len(service_pool)],
            service_pool[(7 * k + 3) % len(service_pool)],
        ]
    foreign_ips = {c: other_pools[c] for c in FOREIGN_COUNTRIES if other_pools[c]}
    taken = {ip for ips in service_ips.values() for ip in ips}
    noise_ips = [ip for c in FOREIGN_COUNTRIES for ip in other_pools[c][40:] if ip not in taken]

    return Organisation(
        seed=seed,
        start=start,
        accounts=accounts,
        assets=assets,
        egress=egress,
        vpn=vpn,
        ranges=ranges,
        foreign_ips=foreign_ips,
        service_ips=service_ips,
        noise_ips=noise_ips,
        site_assets=site_assets,
    )


def write_reference(org: Organisation, out: Path) -> dict[str, int]:
    """Write the three reference CSVs; returns rows written per file."""
    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with (ref / "identity_directory.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(DIRECTORY_COLUMNS)
        for a in org.accounts:
            site = SITES[a.site]
            w.writerow(
                [
                    a.user_id, a.display_name, a.upn, a.sam_account, a.email, "|".join(a.aliases()),
                    a.department, a.role, a.peer_group, a.account_type, str(a.privileged).lower(),
                    site.country, site.city, site.timezone, a.work_start, a.work_end,
                    "|".join(a.devices), a.manager, a.created.isoformat(),
                ]
            )  # fmt: skip
        counts["reference/identity_directory.csv"] = len(org.accounts)
    with (ref / "asset_inventory.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ASSET_COLUMNS)
        for s in org.assets:
            site = SITES[s.site]
            w.writerow(
                [
                    s.asset_id, s.fqdn, s.ip, s.asset_type, s.os, s.criticality, "|".join(s.tags),
                    s.owner, site.code, site.timezone,
                ]
            )  # fmt: skip
        counts["reference/asset_inventory.csv"] = len(org.assets)
    with (ref / "network_ranges.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(NETWORK_RANGE_COLUMNS)
        for row in org.ranges:
            w.writerow(row)
        counts["reference/network_ranges.csv"] = len(org.ranges)
    return counts
