"""IP geolocation on the packaged GeoLite2 City database (+ geoip2fast AS names)."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest

from jobs.reference.geo import (
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


def test_missing_database_file_is_an_error() -> None:
    with pytest.raises((FileNotFoundError, OSError, ValueError)):
        GeoResolver(city_db="/nonexistent/GeoLite2-City.mmdb")


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
