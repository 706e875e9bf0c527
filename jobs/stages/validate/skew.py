"""Clock skew: how far one source's clock runs from the other sources' (informational).

Telemetry of one organisation follows one daily rhythm: people sign in, start programs,
browse and copy files in the same hours, whichever product logs it. A source whose clock is
off shows that rhythm shifted. So, per source and run date, the events' times (UTC) are
binned in `BIN_MINUTES` bins from 12 hours before the run date to 12 hours after its end.
Against each other source, the skew is the shift of the source's histogram (within
+-`MAX_LAG_HOURS`) that best lines it up with the other's: the lag with the largest
correlation of the two mean-centred histograms (ties: the smallest lag). When even the best
correlation is below `MIN_CORRELATION` the two share no rhythm to line up (a flat feed, a few
minutes of recording), and a pair with fewer than `MIN_EVENTS` events on either side is not
compared. The source's skew is the median over the other sources, so one source with a bad
clock does not make the others look skewed.

A positive skew means the source's clock runs ahead (its events look later than the
others'). With no other source to compare with, the skew is not measured (`skew_minutes`
null, success true). The measurement is informational: `ops.dq_results` expectation
`clock_skew`, critical false, success while |skew| <= `validation.clock_skew_tolerance_minutes`;
`details.against` holds the skew against each other source. Events are never moved or
dropped for it: each keeps its own time, and silver.events says its date (`event_date`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.quality.suites import CLOCK_SKEW_RULE

BIN_MINUTES = 10
MAX_LAG_HOURS = 12
MIN_EVENTS = 50
MIN_CORRELATION = 0.3
TIE = 1e-9
_FIRST_HOUR = -12  # bins cover [run date - 12 h, run date + 36 h)
_LAST_HOUR = 36
_BINS = (_LAST_HOUR - _FIRST_HOUR) * 60 // BIN_MINUTES

Histograms = dict[date, dict[int, int]]  # run date -> bin -> events


def time_bins(candidates: DataFrame) -> DataFrame:
    """(run_date, bin, events): the source's event times in `BIN_MINUTES` bins (a small
    aggregate: at most `_BINS` rows per date)."""
    offset = F.col("event_time_offset_hours")
    window = offset.isNotNull() & (offset >= _FIRST_HOUR) & (offset < _LAST_HOUR)
    bin_ = F.floor((offset - F.lit(_FIRST_HOUR)) * F.lit(60 / BIN_MINUTES)).cast("int")
    return (
        candidates.where(window)
        .groupBy("run_date", bin_.alias("bin"))
        .agg(F.count(F.lit(1)).alias("events"))
    )


def collect_histograms(bins: DataFrame) -> Histograms:
    out: Histograms = {}
    for r in bins.collect():
        out.setdefault(r["run_date"], {})[int(r["bin"])] = int(r["events"])
    return out


def _vector(hist: Mapping[int, int]) -> np.ndarray:
    v = np.zeros(_BINS)
    for b, n in hist.items():
        if 0 <= b < _BINS:
            v[b] += n
    return v


def estimate_skew_minutes(source: np.ndarray, reference: np.ndarray) -> float | None:
    """The shift (minutes) of `source` that best lines it up with `reference`, or None when
    either has fewer than `MIN_EVENTS` events or the two share no rhythm (their best
    correlation is below `MIN_CORRELATION`)."""
    if source.sum() < MIN_EVENTS or reference.sum() < MIN_EVENTS:
        return None
    s = source / source.sum()
    r = reference / reference.sum()
    s, r = s - s.mean(), r - r.mean()
    norm = float(np.linalg.norm(s) * np.linalg.norm(r))
    if norm == 0:
        return None
    max_lag = MAX_LAG_HOURS * 60 // BIN_MINUTES
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.empty(len(lags))
    n = len(s)
    for i, shift in enumerate(lags.tolist()):
        # the source's bin b + shift against the reference's bin b
        if shift >= 0:
            scores[i] = float(np.dot(s[shift:], r[: n - shift]))
        else:
            scores[i] = float(np.dot(s[: n + shift], r[-shift:]))
    scores /= norm
    best = float(scores.max())
    if best < MIN_CORRELATION:
        return None
    ties = lags[scores >= best - TIE]
    return float(int(ties[np.argmin(np.abs(ties))]) * BIN_MINUTES)


def clock_skew_rows(
    histograms: Mapping[str, Histograms],
    dates: Sequence[date],
    tolerance_minutes: float,
) -> list[dict[str, Any]]:
    """One `clock_skew` row per source and date (ops.dq_results, suite = source)."""
    out = []
    for d in dates:
        vectors = {s: _vector(h.get(d, {})) for s, h in histograms.items()}
        for source, vector in sorted(vectors.items()):
            others = sorted(s for s, v in vectors.items() if s != source and v.sum() > 0)
            pairwise = {o: estimate_skew_minutes(vector, vectors[o]) for o in others}
            measured = [v for v in pairwise.values() if v is not None]
            skew = float(np.median(measured)) if measured else None
            success = skew is None or abs(skew) <= tolerance_minutes
            details: dict[str, Any] = {
                "skew_minutes": skew,
                "tolerance_minutes": tolerance_minutes,
                "events": int(vector.sum()),
                "against": pairwise,
                "bin_minutes": BIN_MINUTES,
                "method": "median over the other sources of the lag that best correlates the "
                "binned event times",
            }
            if skew is None:
                if not vector.sum():
                    details["reason"] = "no events with a usable time that day"
                elif not others:
                    details["reason"] = "no other source delivered events that day"
                else:
                    details["reason"] = (
                        f"fewer than {MIN_EVENTS} events, or no common rhythm, to compare"
                    )
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "suite": source,
                    "expectation": CLOCK_SKEW_RULE,
                    "column": "event_time",
                    "success": success,
                    "unexpected_count": 0 if success else int(vector.sum()),
                    "element_count": int(vector.sum()),
                    "critical": False,
                    "details": json.dumps(details, sort_keys=True),
                }
            )
    return out
