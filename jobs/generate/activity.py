"""When accounts are active: local work hours, weekends, night batch jobs.

Each source draws "seeds" (a sign-in session, a logon, a connection...) per account and UTC
hour as Poisson counts whose mean follows the account's local daily profile, then expands
each seed into vendor lines. Seeds come out hour by hour in time order, so a day of ten
million events streams through memory one hour at a time.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from jobs.generate.clock import US_PER_HOUR, US_PER_SECOND, day_start_us, utc_offset_s
from jobs.generate.organisation import SITES, Account, Organisation
from jobs.generate.seeding import IdFactory
from jobs.reference.geo import GeoRecord, GeoResolver

# (sort key us, sequence, file, line, kind, event key) -- see jobs.generate.stream
Entry = tuple[int, int, str, str, int, str]

__all__ = [
    "GROUPS",
    "DayContext",
    "Entry",
    "expand_seeds",
    "hourly_weights",
    "local_hour_weights",
    "rate_vector",
    "seeds_by_hour",
    "site_offset",
]

GROUPS = {"human": 0, "admin": 1, "service": 2, "break_glass": 3}
WEEKEND_FACTOR = {0: 0.12, 1: 0.2, 2: 1.0, 3: 0.0}


def local_hour_weights(group: int, work_start: int, work_end: int) -> np.ndarray:
    """Relative activity per local hour on a working day (sums to 1)."""
    w = np.full(24, 0.01)
    if group in (0, 1):
        w[6] = w[22] = w[23] = 0.05
        for h in range(work_start, work_end):
            w[h] = 1.0
        w[min(work_start + 4, 23)] = 0.6  # lunch
        w[max(work_start - 1, 0)] = 0.35
        w[min(work_end, 23)] = 0.35
        for h in (work_end + 1, work_end + 2):
            if h < 24:
                w[h] = 0.15 if group == 0 else 0.25
    elif group == 2:
        w[:] = 1.0
        w[1:5] = 2.0  # nightly jobs
    else:
        w[:] = 0.0
    total = w.sum()
    return w / total if total else w


@dataclass
class _Classes:
    keys: list[tuple[int, int, int, int]]  # site, group, work_start, work_end
    of_account: np.ndarray


def account_classes(org: Organisation) -> _Classes:
    """Accounts sharing a site, type and work hours share one profile (computed once)."""
    cached = org.__dict__.get("_activity_classes")
    if isinstance(cached, _Classes):
        return cached
    accounts = [(a.site, GROUPS[a.account_type], a.work_start, a.work_end) for a in org.accounts]
    keys = list(dict.fromkeys(accounts))
    index = {k: i for i, k in enumerate(keys)}
    classes = _Classes(keys, np.array([index[k] for k in accounts], dtype=np.int32))
    org.__dict__["_activity_classes"] = classes
    return classes


@functools.lru_cache(maxsize=64)
def _weights_for(keys: tuple[tuple[int, int, int, int], ...], day: date) -> np.ndarray:
    start = day_start_us(day)
    out = np.zeros((len(keys), 24))
    for ci, (site, group, ws, we) in enumerate(keys):
        tz = SITES[site].timezone
        local = local_hour_weights(group, ws, we)
        for h in range(24):
            ts = start + h * US_PER_HOUR
            off = utc_offset_s(tz, ts)
            local_seconds = (ts // US_PER_SECOND) + off
            local_hour = (local_seconds // 3600) % 24
            weekday = (local_seconds // 86400 + 3) % 7  # 1970-01-01 was a Thursday
            factor = WEEKEND_FACTOR[group] if weekday >= 5 else 1.0
            out[ci, h] = local[local_hour] * factor
    return out


def hourly_weights(org: Organisation, day: date) -> tuple[np.ndarray, np.ndarray]:
    """(weights[class, utc_hour], class_of_account) for one UTC day."""
    classes = account_classes(org)
    return _weights_for(tuple(classes.keys), day), classes.of_account


@dataclass
class DayContext:
    """What a source needs to generate one day: the org, the day, its random streams."""

    org: Organisation
    day: date
    day_index: int
    days: int
    seed: int
    scale: float
    rng: np.random.Generator
    ids: IdFactory
    resolver: GeoResolver
    seq: Iterator[int] = field(default_factory=itertools.count)
    geo_cache: dict[str, GeoRecord | None] = field(default_factory=dict)

    @property
    def start_us(self) -> int:
        return day_start_us(self.day)

    def geo(self, ip: str) -> GeoRecord | None:
        if ip not in self.geo_cache:
            self.geo_cache[ip] = self.resolver.lookup(ip)
        return self.geo_cache[ip]

    def next_seq(self) -> int:
        return next(self.seq)


def seeds_by_hour(
    ctx: DayContext, rates: np.ndarray, hours: range = range(24)
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per UTC hour: (hour start, account indices, timestamps) of seeds, in time order.

    `rates` is the expected seeds per account on a working day at its busiest profile.
    """
    weights, cls = hourly_weights(ctx.org, ctx.day)
    start = ctx.start_us
    for h in hours:
        lam = rates * weights[cls, h]
        counts = ctx.rng.poisson(lam)
        n = int(counts.sum())
        hour_start = start + h * US_PER_HOUR
        if n == 0:
            yield hour_start, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            continue
        who = np.repeat(np.arange(len(rates), dtype=np.int64), counts)
        ts = hour_start + ctx.rng.integers(0, US_PER_HOUR, size=n, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        yield hour_start, who[order], ts[order]


def rate_vector(org: Organisation, per_type: dict[str, float], scale: float) -> np.ndarray:
    """Seeds per day for each account, by account type (0 for types not listed)."""
    return np.array([per_type.get(a.account_type, 0.0) * scale for a in org.accounts])


def site_offset(account: Account, ts_us: int) -> int:
    return utc_offset_s(SITES[account.site].timezone, ts_us)


def expand_seeds(
    ctx: DayContext,
    rates: np.ndarray,
    expand: Callable[[int, int, list[float], list[float]], list[Entry]],
    *,
    randoms: int,
    normals: int = 0,
    lookback_us: int,
    batch: int = 4000,
    hourly: Callable[[int], list[Entry]] | None = None,
) -> Iterator[tuple[list[Entry], int]]:
    """Turn seeds into entries in batches, each with the watermark below which the stream
    is final (no later seed can produce an entry more than `lookback_us` before itself).

    `expand(account, ts, uniforms, normals)` gets pre-drawn random numbers (one numpy call
    per hour, not per seed); `hourly(hour_start)` adds entries not tied to an account.
    """
    for hour_start, who, ts in seeds_by_hour(ctx, rates):
        n = len(who)
        if hourly is not None:
            yield hourly(hour_start), hour_start - lookback_us
        buf: list[Entry] = []
        if n:
            draws = ctx.rng.random((n, randoms)).tolist()
            gauss = ctx.rng.standard_normal((n, normals)).tolist() if normals else [[]] * n
            accounts = who.tolist()
            stamps = ts.tolist()
            for i in range(n):
                buf.extend(expand(accounts[i], stamps[i], draws[i], gauss[i]))
                if len(buf) >= batch:
                    yield buf, stamps[i] - lookback_us
                    buf = []
        yield buf, hour_start + US_PER_HOUR - lookback_us
