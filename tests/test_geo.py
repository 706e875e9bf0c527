"""IP geolocation on the packaged GeoLite2 City database (+ geoip2fast AS names), and on a
user's own MMDB files (a DB-IP Lite-shaped City and ASN database written for the test)."""

from __future__ import annotations

import ast
import ipaddress
import random
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from jobs.core.config import load_settings
from jobs.core.errors import ConfigError
from jobs.quality.results import geo_database_rows
from jobs.reference import geo as geo_module
from jobs.reference.geo import (
    GeoDatabase,
    GeoDatabaseError,
    GeoRecord,
    GeoResolver,
    country_ip_pools,
    default_resolver,
    haversine_km,
    is_private,
)


@pytest.fixture(scope="module")
def geo() -> GeoResolver:
    return default_resolver()


def test_well_known_public_addresses_geolocate(geo: GeoResolver) -> None:
    google = geo.lookup("8.8.8.8")
    assert google is not None
    assert google.country == "US"
    assert google.latitude is not None and google.longitude is not None
    assert google.as_org is not None and "GOOGLE" in google.as_org.upper()
    uk_isp = geo.lookup("81.2.69.160")  # Andrews & Arnold, a UK ISP
    assert uk_isp is not None and uk_isp.country == "GB"
    assert uk_isp.city  # city-level record
    # surrounding whitespace is tolerated, the answer is the same
    assert geo.lookup(" 8.8.8.8 ") == google


@pytest.mark.parametrize(
    "bad",
    ["10.1.2.3", "192.168.0.1", "172.16.5.4", "127.0.0.1", "169.254.1.1", "100.64.0.1",
     "::1", "fe80::1", "224.0.0.1", "", "not-an-ip", "999.1.1.1", "1.2.3", None, 12345, "8.8.8.8/32"],
)  # fmt: skip
def test_private_invalid_and_garbage_give_none(geo: GeoResolver, bad: object) -> None:
    assert geo.lookup(bad) is None  # type: ignore[arg-type]


def test_is_private() -> None:
    assert is_private("10.0.0.1") and is_private("192.168.1.1") and is_private("::1")
    assert not is_private("8.8.8.8")
    assert not is_private("garbage")  # not an address at all is not "private"


def test_is_private_agrees_with_the_standard_library() -> None:
    rng = random.Random(5)
    samples = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20000)]
    samples += [
        ipaddress.IPv4Address(x)
        for x in ("100.64.0.1", "100.128.0.1", "192.0.0.171", "198.19.255.255", "240.0.0.1")
    ]
    for addr in samples:
        assert is_private(str(addr)) == (not addr.is_global or addr.is_multicast), addr


def test_lookup_many_deduplicates_and_keys_by_input(geo: GeoResolver) -> None:
    out = geo.lookup_many(["8.8.8.8", "10.0.0.1", "8.8.8.8", "bad"])
    assert list(out) == ["8.8.8.8", "10.0.0.1", "bad"]
    assert isinstance(out["8.8.8.8"], GeoRecord) and out["8.8.8.8"].country == "US"
    assert out["10.0.0.1"] is None and out["bad"] is None


def test_haversine_known_distances() -> None:
    london, new_york = (51.5074, -0.1278), (40.7128, -74.0060)
    assert haversine_km(*london, *new_york) == pytest.approx(5570, abs=25)
    assert haversine_km(*london, *london) == 0.0
    assert haversine_km(0, 0, 0, 180) == pytest.approx(20015, abs=5)


def test_network_addresses_share_one_record(geo: GeoResolver) -> None:
    cidr = geo.network("81.2.69.160")
    assert cidr is not None
    net = ipaddress.ip_network(cidr)
    assert ipaddress.ip_address("81.2.69.160") in net
    first, last = geo.lookup(str(net[0])), geo.lookup(str(net[-1]))
    assert first is not None and last is not None
    assert (first.country, first.city) == (last.country, last.city)
    assert geo.network("10.0.0.1") is None


def test_missing_database_file_is_a_one_line_configuration_error() -> None:
    with pytest.raises(GeoDatabaseError, match=r"^geo.database: no such file /nonexistent/"):
        GeoResolver(database="/nonexistent/GeoLite2-City.mmdb")
    assert GeoDatabaseError("x").exit_code == 2


def test_the_bundled_database_says_it_is_bundled_and_from_2018(geo: GeoResolver) -> None:
    db = geo.database
    assert (db.bundled, db.database_type, db.build_date) == (
        True,
        "GeoLite2-City",
        date(2018, 7, 3),
    )
    assert db.asn == "geoip2fast (bundled)"
    assert db.describe().startswith("bundled GeoLite2-City built 2018-07-03")


BUILT = datetime(2026, 11, 2, tzinfo=UTC)


def _write_mmdb(path: Path, database_type: str, networks: dict[str, dict[str, object]]) -> Path:
    """A small MMDB in the layout DB-IP's Lite databases use (MaxMind's format)."""
    mmdb_writer = pytest.importorskip("mmdb_writer", reason="mmdb-writer (dev) writes test MMDBs")
    netaddr = pytest.importorskip("netaddr")
    writer = mmdb_writer.MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for cidr, record in networks.items():
        writer.insert_network(netaddr.IPSet([cidr]), record)
    patch = pytest.MonkeyPatch()
    patch.setattr(mmdb_writer.time, "time", BUILT.timestamp)  # the file's build epoch
    try:
        writer.to_db_file(str(path))
    finally:
        patch.undo()
    return path


def _city(iso: str, city: str, lat: float, lon: float) -> dict[str, object]:
    return {
        "city": {"names": {"en": city}},
        "country": {"iso_code": iso, "names": {"en": iso}},
        "location": {"latitude": lat, "longitude": lon},
        "subdivisions": [{"names": {"en": "Region"}}],
    }


@pytest.fixture()
def own_databases(tmp_path: Path) -> tuple[Path, Path]:
    city = _write_mmdb(
        tmp_path / "dbip-city-lite-2026-11.mmdb",
        "DBIP-City-Lite",
        {"8.8.8.0/24": _city("CH", "Zurich", 47.37, 8.54), "81.2.69.0/24": _city("NZ", "Auckland", -36.85, 174.76)},
    )  # fmt: skip
    asn = _write_mmdb(
        tmp_path / "dbip-asn-lite-2026-11.mmdb",
        "DBIP-ASN-Lite",
        {"8.8.8.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "Example Net"}},
    )  # fmt: skip
    return city, asn


def test_the_users_own_city_and_asn_databases_are_used(own_databases: tuple[Path, Path]) -> None:
    city, asn = own_databases
    resolver = GeoResolver(database=str(city), asn_database=str(asn))
    try:
        rec = resolver.lookup("8.8.8.8")
        assert rec == GeoRecord("CH", "Zurich", 47.37, 8.54, 64500, "Example Net", "CH", "Region")
        assert resolver.lookup("81.2.69.160") == GeoRecord(
            "NZ", "Auckland", -36.85, 174.76, None, None, "NZ", "Region"
        )
        assert resolver.lookup("1.1.1.1") is None  # not in this database
        assert resolver.lookup("10.0.0.1") is None
        assert resolver.database == GeoDatabase(
            path=str(city),
            database_type="DBIP-City-Lite",
            build_date=BUILT.date(),
            bundled=False,
            asn=str(asn),
        )
    finally:
        resolver.close()


def test_a_database_of_the_wrong_kind_is_refused(own_databases: tuple[Path, Path]) -> None:
    city, asn = own_databases
    with pytest.raises(
        GeoDatabaseError, match="is a DBIP-ASN-Lite database; give a City or Country"
    ):
        GeoResolver(database=str(asn))
    with pytest.raises(
        GeoDatabaseError, match=r"geo.asn_database: .* is a DBIP-City-Lite database"
    ):
        GeoResolver(database=str(city), asn_database=str(city))
    junk = city.with_name("junk.mmdb")
    junk.write_bytes(b"not an mmdb")
    with pytest.raises(GeoDatabaseError, match="not a readable MMDB file"):
        GeoResolver(database=str(junk))


def test_dq_rows_flag_the_bundled_or_an_old_database_by_the_run_date() -> None:
    own = GeoDatabase(
        "/srv/geo/GeoLite2-City.mmdb", "GeoLite2-City", date(2026, 10, 20), False, "x"
    )
    bundled = default_resolver().database
    day, later = date(2026, 10, 30), date(2026, 12, 30)
    rows = geo_database_rows(own, [day, later], max_age_days=45)
    assert [(r["run_date"], r["success"], r["critical"]) for r in rows] == [
        (day, True, False),  # 10 days old on the day it located
        (later, False, False),  # 71 days old: stale
    ]
    assert {(r["source"], r["suite"], r["expectation"]) for r in rows} == {
        ("geolocation", "reference", "geo_database_current")
    }
    (row,) = geo_database_rows(bundled, [day], max_age_days=10_000)
    assert row["success"] is False  # the packaged database is flagged whatever its age
    assert '"build_date": "2018-07-03"' in row["details"] and '"bundled": true' in row["details"]


def test_geo_settings_take_a_database_and_name_the_renamed_keys(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"POLICYLAKE__GEO__DATABASE": "geo/city.mmdb"})
    assert settings.with_workdir(tmp_path).geo.database == str(tmp_path / "geo" / "city.mmdb")
    assert settings.geo.max_age_days == 45
    with pytest.raises(ConfigError, match="'city_db' is now 'database'"):
        load_settings(None, environ={"POLICYLAKE__GEO__CITY_DB": "/x.mmdb"})


def test_no_private_ipaddress_internals_are_used() -> None:
    """Only public `ipaddress` API: private names (`_IPv4Constants`) change between releases."""
    tree = ast.parse(Path(geo_module.__file__).read_text(encoding="utf-8"))
    private = [
        f"{node.lineno}: ipaddress.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ipaddress"
        and node.attr.startswith("_")
    ]
    strings = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value == "_IPv4Constants"
    ]
    assert private == [] and strings == []


COUNTRIES = [
    "US", "GB", "DE", "IN", "BR", "NG", "RU", "CN", "VN", "ID", "AU", "JP", "ZA", "AR", "KR",
    "SG", "TR", "UA", "RO", "MX", "CO", "EG", "PK", "TH", "IE", "NL", "FR", "CA", "KE", "SE",
]  # fmt: skip


def test_country_pools_are_real_deterministic_and_fast(geo: GeoResolver) -> None:
    began = time.process_time()  # CPU time: a busy CI box must not make this flaky
    pools = country_ip_pools(COUNTRIES, 20, seed=3, resolver=geo)
    assert time.process_time() - began < 5.0
    assert list(pools) == COUNTRIES
    for country, ips in pools.items():
        assert len(ips) == 20, country
        assert len(set(ips)) == 20
        for ip in ips:
            rec = geo.lookup(ip)
            assert rec is not None and rec.country == country, (country, ip, rec)
            assert rec.city and rec.latitude is not None and rec.longitude is not None
            assert not is_private(ip)
    assert country_ip_pools(COUNTRIES, 20, seed=3, resolver=geo) == pools
    other = country_ip_pools(COUNTRIES, 20, seed=4, resolver=geo)
    assert other != pools
    assert other["US"] != pools["US"]


def test_empty_pool_requests() -> None:
    assert country_ip_pools(["us"], 0, seed=1) == {"US": []}
    assert country_ip_pools([], 5, seed=1) == {}
