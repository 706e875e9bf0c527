"""IP geolocation from a maintained library and data file, never a hand-written IP table.

Your own database (`geo.database` in the settings): a City or Country MMDB in MaxMind's
format, as MaxMind ships GeoLite2/GeoIP2 City and DB-IP ships IP-to-City Lite; optionally an
ASN MMDB (`geo.asn_database`: GeoLite2-ASN, DB-IP ASN Lite). Both are read with MaxMind's
own `maxminddb` reader.

Without one, the packaged data keeps the demo offline, and says how old it is:
- city, country and coordinates: the GeoLite2-City database of the PyPI package
  `maxminddb-geolite2` (built 2018-07-03: countries, cities and address allocations have moved
  since, so `GeoResolver.database` reports it as bundled with its build date and the
  normalize stage records that in ops.dq_results);
- autonomous system: the `geoip2fast` package's `geoip2fast-asn.dat.gz` (it carries the AS
  organisation name but no AS number, so `asn` stays None with the default data).

The generator uses the same database to pick real public addresses per country
(`country_ip_pools`), so generated sign-ins geolocate where the scenario says they are.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import maxminddb
import numpy as np

from jobs.core.errors import ConfigError

__all__ = [
    "GeoDatabase",
    "GeoDatabaseError",
    "GeoRecord",
    "GeoResolver",
    "country_ip_pools",
    "default_resolver",
    "haversine_km",
    "is_private",
]

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class GeoRecord:
    """Where an address is, as far as the database knows (fields are None when unknown)."""

    country: str | None
    city: str | None
    latitude: float | None
    longitude: float | None
    asn: int | None
    as_org: str | None
    country_name: str | None = None
    subdivision: str | None = None


def _parse_ip(ip: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(ip, str):
        return None
    text = ip.strip()
    if not text or len(text) > 64:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _public_v4(value: int) -> bool:
    """`ipaddress`'s own verdict (public API), cached per address: the generator asks about
    the same addresses over and over, and `is_global` walks the special blocks per call."""
    addr = ipaddress.IPv4Address(value)
    return addr.is_global and not addr.is_multicast


def _public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.version == 4:
        return _public_v4(int(addr))
    return addr.is_global and not addr.is_multicast


def is_private(ip: str) -> bool:
    """True for addresses that never geolocate: private, loopback, link-local, reserved..."""
    parsed = _parse_ip(ip)
    if parsed is None:
        return False
    return not _public(parsed)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; what impossible-travel speed checks divide by elapsed time."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _default_city_db() -> str:
    import _maxminddb_geolite2

    return str(_maxminddb_geolite2.geolite2_database())


# What a location database's `database_type` must contain (GeoLite2-City, GeoIP2-Country,
# DBIP-City-Lite, GeoIP2-Enterprise ...), and an AS database's (GeoLite2-ASN, DBIP-ASN-Lite,
# GeoIP2-ISP). An ASN file given as the location database would geolocate nothing, silently.
LOCATION_DATABASE_KINDS = ("City", "Country", "Enterprise")
ASN_DATABASE_KINDS = ("ASN", "ISP")


class GeoDatabaseError(ConfigError):
    """A configured database is missing, unreadable or of the wrong kind (exit 2)."""


@dataclass(frozen=True)
class GeoDatabase:
    """Which location database a resolver reads, and how old its data is."""

    path: str
    database_type: str  # from the file's own metadata, e.g. GeoLite2-City, DBIP-City-Lite
    build_date: date  # the file's build epoch (UTC day)
    bundled: bool  # the offline default shipped in a package, not the user's own
    asn: str  # where AS data comes from: a path, or "geoip2fast (bundled)"

    def age_days(self, today: date) -> int:
        return (today - self.build_date).days

    def describe(self) -> str:
        kind = "bundled " if self.bundled else ""
        return f"{kind}{self.database_type} built {self.build_date.isoformat()} ({self.path})"


def _open(path: str, setting: str, kinds: tuple[str, ...]) -> maxminddb.Reader:
    try:
        reader = maxminddb.open_database(path)
    except FileNotFoundError:
        raise GeoDatabaseError(f"{setting}: no such file {path}") from None
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoDatabaseError(f"{setting}: {path} is not a readable MMDB file ({exc})") from None
    kind = str(reader.metadata().database_type)
    if not any(k.lower() in kind.lower() for k in kinds):
        reader.close()
        raise GeoDatabaseError(
            f"{setting}: {path} is a {kind} database; give a {' or '.join(kinds)} database"
        )
    return reader


class _Geoip2FastAsn:
    """AS organisation lookups from geoip2fast's shipped ASN data (no AS numbers in it).

    geoip2fast keeps its tables in module globals, so one loaded instance serves the
    process; a lock keeps lookups safe if threads share it.
    """

    _lock = threading.Lock()
    _instance: Any = None

    def __init__(self) -> None:
        with self._lock:
            if _Geoip2FastAsn._instance is None:
                from geoip2fast import GeoIP2Fast

                _Geoip2FastAsn._instance = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz")
        self._geo = _Geoip2FastAsn._instance

    def lookup(self, ip: str) -> tuple[int | None, str | None]:
        try:
            result = self._geo.lookup(ip)
        except Exception:
            return None, None
        name = getattr(result, "asn_name", "") or ""
        if not name or name in ("IANA.ORG", "<unknown>") or getattr(result, "is_private", False):
            return None, None
        return None, str(name)


def _as_dict(value: object) -> dict[str, Any]:
    """maxminddb returns loosely typed records; anything but a map counts as empty."""
    return value if isinstance(value, dict) else {}


def _name(node: Mapping[str, Any] | None) -> str | None:
    if not node:
        return None
    names = node.get("names") or {}
    value = names.get("en")
    return str(value) if value else None


class GeoResolver:
    """Country, city, coordinates and AS of public IP addresses; None for anything else."""

    def __init__(self, database: str | None = None, asn_database: str | None = None) -> None:
        self.bundled = database is None
        self.database_path = database or _default_city_db()
        self.asn_database_path = asn_database
        self._city = _open(self.database_path, "geo.database", LOCATION_DATABASE_KINDS)
        try:
            self._asn_mmdb = (
                _open(asn_database, "geo.asn_database", ASN_DATABASE_KINDS)
                if asn_database
                else None
            )
        except GeoDatabaseError:
            self._city.close()
            raise
        self._asn_fast = None if asn_database else _Geoip2FastAsn()

    @property
    def database(self) -> GeoDatabase:
        """The location database in use, with its type and build date (its own metadata)."""
        meta = self._city.metadata()
        built = datetime.fromtimestamp(int(meta.build_epoch), tz=UTC).date()
        return GeoDatabase(
            path=self.database_path,
            database_type=str(meta.database_type),
            build_date=built,
            bundled=self.bundled,
            asn=self.asn_database_path or "geoip2fast (bundled)",
        )

    def close(self) -> None:
        """Release the database files (the default resolver is never closed)."""
        self._city.close()
        if self._asn_mmdb is not None:
            self._asn_mmdb.close()

    def lookup(self, ip: str, *, with_asn: bool = True) -> GeoRecord | None:
        """Never raises: private, invalid and unknown addresses give None.

        `with_asn=False` skips the AS lookup (location only, several times faster).
        """
        parsed = _parse_ip(ip)
        if parsed is None or not _public(parsed):
            return None
        text = str(parsed)
        try:
            raw: object = self._city.get(text)
        except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
            raw = None
        asn, as_org = self._asn(text) if with_asn else (None, None)
        if not isinstance(raw, dict):
            if as_org is None and asn is None:
                return None
            return GeoRecord(None, None, None, None, asn, as_org)
        rec = _as_dict(raw)
        country_node = _as_dict(rec.get("country") or rec.get("registered_country"))
        location = _as_dict(rec.get("location"))
        subdivisions = rec.get("subdivisions")
        first_subdivision = (
            _as_dict(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else None
        )
        lat = location.get("latitude")
        lon = location.get("longitude")
        iso = country_node.get("iso_code")
        return GeoRecord(
            country=str(iso) if iso else None,
            city=_name(_as_dict(rec.get("city"))),
            latitude=float(lat) if lat is not None else None,
            longitude=float(lon) if lon is not None else None,
            asn=asn,
            as_org=as_org,
            country_name=_name(country_node),
            subdivision=_name(first_subdivision),
        )

    def lookup_many(self, ips: Iterable[str]) -> dict[str, GeoRecord | None]:
        """One lookup per distinct address, keyed by the input spelling."""
        out: dict[str, GeoRecord | None] = {}
        for ip in ips:
            if ip not in out:
                out[ip] = self.lookup(ip)
        return out

    def network(self, ip: str) -> str | None:
        """The database network (CIDR) holding `ip`: every address in it geolocates alike."""
        parsed = _parse_ip(ip)
        if parsed is None or not _public(parsed):
            return None
        try:
            rec, prefix = self._city.get_with_prefix_len(str(parsed))
        except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
            return None
        if rec is None:
            return None
        return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False))

    def _asn(self, ip: str) -> tuple[int | None, str | None]:
        if self._asn_mmdb is not None:
            try:
                raw: object = self._asn_mmdb.get(ip)
            except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
                return None, None
            rec = _as_dict(raw)
            number = rec.get("autonomous_system_number")
            org = rec.get("autonomous_system_organization")
            return (int(number) if number is not None else None, str(org) if org else None)
        if self._asn_fast is not None:
            return self._asn_fast.lookup(ip)
        return None, None

    # -- generator support -------------------------------------------------------------

    def _probe(self, ip_int: int) -> tuple[str | None, int]:
        """Country of a city-level record at `ip_int` (None if no city), and its prefix."""
        text = socket.inet_ntoa(struct.pack(">I", ip_int))
        raw, prefix = self._city.get_with_prefix_len(text)
        rec = _as_dict(raw)
        if "city" not in rec:
            return None, prefix
        location = _as_dict(rec.get("location"))
        if location.get("latitude") is None or location.get("longitude") is None:
            return None, prefix
        iso = _as_dict(rec.get("country")).get("iso_code")
        return (str(iso) if iso else None), prefix


@functools.lru_cache(maxsize=1)
def default_resolver() -> GeoResolver:
    """One resolver per process on the packaged databases (opening them costs ~0.5 s)."""
    return GeoResolver()


# Public unicast space worth probing: skip 0/8, 10/8, 127/8 and multicast/reserved 224/3.
_PROBE_LOW = 1 << 24
_PROBE_HIGH = 224 << 24
_PROBE_BATCH = 4096
_MAX_RANDOM_PROBES = 120_000
_NEIGHBOUR_SPAN = 1 << 16


def _country_ip_pools(
    resolver: GeoResolver, countries: list[str], per_country: int, seed: int
) -> dict[str, list[str]]:
    wanted = list(dict.fromkeys(c.upper() for c in countries))
    pools: dict[str, list[int]] = {c: [] for c in wanted}
    seen: dict[str, set[int]] = {c: set() for c in wanted}
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x6E0]))

    def take(country: str | None, ip_int: int) -> None:
        if country not in pools or len(pools[country]) >= per_country or ip_int in seen[country]:
            return
        if _public(ipaddress.IPv4Address(ip_int)):
            seen[country].add(ip_int)
            pools[country].append(ip_int)

    def missing() -> list[str]:
        return [c for c in wanted if len(pools[c]) < per_country]

    # 1) seeded random probes over public space, bucketed by country.
    probes = 0
    while missing() and probes < _MAX_RANDOM_PROBES:
        batch = rng.integers(_PROBE_LOW, _PROBE_HIGH, size=_PROBE_BATCH, dtype=np.int64)
        for value in batch.tolist():
            country, _ = resolver._probe(value)
            take(country, value)
        probes += _PROBE_BATCH
        # stop the broad search once every rare country has a foothold to grow from
        if all(pools[c] for c in missing()) and probes >= 4 * _PROBE_BATCH:
            break

    # 2) grow rare countries around the addresses already found (allocations cluster).
    for country in missing():
        seeds = list(pools[country])
        attempts = 0
        while seeds and len(pools[country]) < per_country and attempts < 200 * per_country:
            base = seeds[attempts % len(seeds)]
            offset = int(rng.integers(-_NEIGHBOUR_SPAN, _NEIGHBOUR_SPAN))
            value = min(max(base + offset, _PROBE_LOW), _PROBE_HIGH - 1)
            attempts += 1
            found, _ = resolver._probe(value)
            if found == country:
                take(country, value)
    return {c: [socket.inet_ntoa(struct.pack(">I", v)) for v in pools[c]] for c in wanted}


def country_ip_pools(
    countries: list[str], per_country: int, seed: int, resolver: GeoResolver | None = None
) -> dict[str, list[str]]:
    """Real public IPv4 addresses per country (each with a city and coordinates in the DB).

    Deterministic for a seed and database: seeded random probes are bucketed by the
    country the database gives, then rare countries grow around their first finds.
    A country the database barely knows may get fewer than `per_country` addresses.
    """
    if per_country <= 0 or not countries:
        return {c.upper(): [] for c in countries}
    return _country_ip_pools(resolver or default_resolver(), countries, per_country, seed)
