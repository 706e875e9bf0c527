"""Explainable risk signals: each a pure function of events or sessions against baselines.

Every signal function returns rows `(run_date, session_id, signal)` where `signal` has the
`jobs.core.tables.SIGNAL` shape: the measured value, the threshold it crossed, the risk points it
contributes, a plain-language detail and the telemetry source it was drawn from. A function
returns at most one row per session (the strongest). The definitions follow what identity and
detection products document (Entra ID Protection, Okta ThreatInsight, Defender for Identity,
GuardDuty); the thresholds live in `ScoringSettings` (docs/scoring.md has the full table).

Baselines (`gold.baselines`, one row per entity per day, built from days before it) decide
what is "new" or "rare". An entity in its learning period is compared with the entity its
baseline names in `compare_to` (its peer group). When the comparator has no history of the
kind a signal needs, the signal stays silent: with nothing to compare, "new" means nothing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.config import ScoringSettings
from jobs.core.tables import BASELINES
from jobs.features.calendar import hour_of_week
from jobs.features.processes import process_pair
from jobs.features.statistics import median_of_sorted
from jobs.stages.score.sessions import AUTH_CLASS, view_session_id

__all__ = [
    "brute_force",
    "country_name",
    "exfiltration_volume",
    "first_time_host_access",
    "host_peer_baselines",
    "impossible_travel",
    "inbound_scan",
    "ip_in_cidrs",
    "lateral_fan_out",
    "new_country",
    "new_device",
    "off_hours",
    "password_spray",
    "privileged_anomaly",
    "rare_process_pair",
    "risky_iam_change",
    "strongest",
    "unsolicited_inbound",
]

SIGNAL_ROW = ("run_date", "session_id", "signal")


# --- shared pieces -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """ISO 3166 alpha-2 -> English name, from the geo package the pipeline already ships."""
    try:
        from geoip2fast import geoip2fast as g2f

        g2f.GeoIP2Fast()
        names = dict(getattr(g2f, "geoipCountryNamesDict", {}))
    except Exception:  # the names are cosmetic; codes still explain the signal
        names = {}
    return {k: v for k, v in names.items() if len(k) == 2 and k.isalpha() and k.isupper()}


def country_name(code: Column) -> Column:
    """The country's English name for reasons ("Brazil"), else the code itself."""
    names = _country_names()
    if not names:
        return code
    mapping = F.create_map(*[F.lit(x) for kv in sorted(names.items()) for x in kv])
    return F.coalesce(F.try_element_at(mapping, F.upper(code)), code)


def _fmt(value: Column, decimals: int = 0) -> Column:
    return F.format_number(value.cast("double"), decimals)


def _bytes_text(value: Column) -> Column:
    v = value.cast("double")
    return (
        F.when(v >= 1e9, F.concat(_fmt(v / 1e9, 1), F.lit(" GB")))
        .when(v >= 1e6, F.concat(_fmt(v / 1e6, 1), F.lit(" MB")))
        .when(v >= 1e3, F.concat(_fmt(v / 1e3, 1), F.lit(" kB")))
        .otherwise(F.concat(_fmt(v, 0), F.lit(" bytes")))
    )


def _duration_text(seconds: Column) -> Column:
    s = seconds.cast("double")
    return (
        F.when(s < 90, F.concat(_fmt(s, 0), F.lit(" seconds")))
        .when(s < 5400, F.concat(_fmt(s / 60, 0), F.lit(" minutes")))
        .otherwise(F.concat(_fmt(s / 3600, 1), F.lit(" hours")))
    )


def contribution(
    name: str, value: Column, threshold: Column, cfg: ScoringSettings, scaled: bool
) -> Column:
    """Points for a fired signal: its base points, times up to `signal_max_factor` as the
    value goes past the threshold (x1.25 at twice the threshold, x1.5 at four times)."""
    base = F.lit(float(cfg.signal_points[name]))
    if not scaled:
        return base
    ratio = F.greatest(
        value.cast("double") / F.greatest(threshold.cast("double"), F.lit(1e-9)), F.lit(1.0)
    )
    factor = F.least(F.lit(cfg.signal_max_factor), F.lit(1.0) + F.lit(0.25) * F.log2(ratio))
    return F.round(base * factor, 1)


def make_signal(
    name: str,
    value: Column,
    threshold: Column,
    cfg: ScoringSettings,
    detail: Column,
    source: Column,
    scaled: bool = True,
) -> Column:
    return F.struct(
        F.lit(name).alias("name"),
        value.cast("double").alias("value"),
        threshold.cast("double").alias("threshold"),
        contribution(name, value, threshold, cfg, scaled).cast("double").alias("contribution"),
        detail.cast("string").alias("detail"),
        source.cast("string").alias("source"),
    )


def strongest(rows: DataFrame) -> DataFrame:
    """At most one signal per session: the one with the most points (ties: the first detail)."""
    return rows.groupBy("run_date", "session_id").agg(
        F.max_by("signal", F.struct(F.col("signal.contribution"), F.col("signal.detail"))).alias(
            "signal"
        )
    )


def _hour_share(hours: Column, bucket: Column) -> Column:
    """Share of the habit window's activity in this hour of week and the hours either side
    (wrapping round the week): a sign-in at 07:55 is not "off hours" for someone active at 08:00."""
    total = F.aggregate(hours, F.lit(0).cast("long"), lambda acc, x: acc + F.coalesce(x, F.lit(0)))
    around = [
        F.coalesce(F.try_element_at(hours, ((bucket + d + 168) % 168) + 1), F.lit(0))
        for d in (-1, 0, 1)
    ]
    return F.when(total > 0, reduce(lambda a, b: a + b, around).cast("double") / total)


def _is_success_signin(df: DataFrame) -> Column:
    return (F.col("class_name") == AUTH_CLASS) & (F.col("status") == "success")


# --- baselines: own profile and the comparator -----------------------------------------------

BASELINE_USER_TYPES = ("user", "service_account")


def with_comparator(
    df: DataFrame, baselines: DataFrame, entity_type: Column, entity_id: Column, columns: list[str]
) -> DataFrame:
    """Attach `own_<c>` (the entity's baseline) and `cmp_<c>` (what to compare with: its own
    baseline, or its peer group's while it is in its learning period or has no baseline yet),
    plus `peer_<c>` (the peer group's) and `in_learning`. `first_seen` always comes along, for
    `history_ok`."""
    columns = list(dict.fromkeys([*columns, "first_seen"]))
    b = baselines.select(
        "run_date",
        "entity_type",
        "entity_id",
        "in_learning",
        "compare_to_type",
        "compare_to",
        *columns,
    )
    own = b.select(
        F.col("run_date").alias("_b_run_date"),
        F.col("entity_type").alias("_b_type"),
        F.col("entity_id").alias("_b_id"),
        F.col("in_learning").alias("_b_learning"),
        F.col("compare_to_type").alias("_b_cmp_type"),
        F.col("compare_to").alias("_b_cmp"),
        *[F.col(c).alias(f"own_{c}") for c in columns],
    )
    peer = b.select(
        F.col("run_date").alias("_p_run_date"),
        F.col("entity_type").alias("_p_type"),
        F.col("entity_id").alias("_p_id"),
        *[F.col(c).alias(f"peer_{c}") for c in columns],
    )
    keyed = df.withColumn("_e_type", entity_type).withColumn("_e_id", entity_id)
    joined = keyed.join(
        own,
        (keyed["run_date"] == own["_b_run_date"])
        & (keyed["_e_type"] == own["_b_type"])
        & (keyed["_e_id"] == own["_b_id"]),
        "left",
    )
    peer_type = F.lit("peer_group")
    peer_id = F.coalesce(
        F.when(F.col("_b_cmp_type") == "peer_group", F.col("_b_cmp")), F.col("peer_group")
    )
    if "peer_group" not in df.columns:
        peer_id = F.when(F.col("_b_cmp_type") == "peer_group", F.col("_b_cmp"))
    joined = joined.withColumn("_pt", peer_type).withColumn("_pid", peer_id)
    joined = joined.join(
        peer,
        (joined["run_date"] == peer["_p_run_date"])
        & (joined["_pt"] == peer["_p_type"])
        & (joined["_pid"] == peer["_p_id"]),
        "left",
    )
    learning = F.coalesce(F.col("_b_learning"), F.lit(True))
    out = joined.withColumn("in_learning", learning)
    for c in columns:
        out = out.withColumn(
            f"cmp_{c}", F.when(learning, F.col(f"peer_{c}")).otherwise(F.col(f"own_{c}"))
        )
    return out.drop(
        "_e_type", "_e_id", "_b_run_date", "_b_type", "_b_id", "_b_learning", "_b_cmp_type", "_b_cmp",
        "_p_run_date", "_p_type", "_p_id", "_pt", "_pid",
    )  # fmt: skip


def _seen_within(history: Column, item: Column, run_date: Column, days: int | None) -> Column:
    """The item is in the history map (and, with `days`, was last seen within that many days)."""
    entry = F.try_element_at(history, item)
    if days is None:
        return entry.isNotNull()
    return entry.isNotNull() & (entry["last_seen"] >= F.date_sub(run_date, days))


def history_ok(prefix: str, cfg: ScoringSettings) -> Column:
    """The `own` / `peer` / `cmp` baseline has at least `min_history_days` behind it."""
    first = F.col(f"{prefix}_first_seen")
    return F.coalesce(F.datediff(F.col("run_date"), first) >= cfg.min_history_days, F.lit(False))


def _has_history(history: Column) -> Column:
    return F.coalesce(F.size(history), F.lit(0)) > 0


def _comparator_text(learning: Column, peer: Column, own_text: str) -> Column:
    return F.when(
        learning, F.concat(F.lit("its peer group "), F.coalesce(peer, F.lit("(unknown)")))
    ).otherwise(F.lit(own_text))


# --- identity: sign-ins ----------------------------------------------------------------------


def ip_in_cidrs(ip: Column, cidrs: Sequence[str]) -> Column:
    """True when the IPv4 address falls in one of `cidrs` (IPv6 ranges are not matched)."""
    nets = [n for n in (ipaddress.ip_network(c, strict=False) for c in cidrs) if n.version == 4]
    if not nets:
        return F.lit(False)
    octets = F.split(F.coalesce(ip, F.lit("")), r"\.")
    valid = ip.rlike(r"^\d{1,3}(\.\d{1,3}){3}$")
    # try_*: IPv6 and junk must give null, not fail the job (ANSI mode evaluates both sides)
    value = reduce(
        lambda acc, i: acc * 256 + F.try_element_at(octets, F.lit(i + 1)).try_cast("long"),
        range(1, 4),
        F.try_element_at(octets, F.lit(1)).try_cast("long"),
    )
    inside = reduce(
        lambda acc, n: acc | value.between(int(n.network_address), int(n.broadcast_address)),
        nets,
        F.lit(False),
    )
    return F.coalesce(valid & inside, F.lit(False))


def impossible_travel(
    signins: DataFrame, cfg: ScoringSettings, office_egress: Sequence[str] | None = None
) -> DataFrame:
    """Speed between a user's consecutive successful, geolocated sign-ins above `travel_speed_kmh`.

    Hops shorter than `travel_min_distance_km` are geo-IP noise within a metro area and never
    count. Known egress/VPN addresses (`src_is_known_egress`) are ignored: a VPN gateway's
    location says nothing about the user's. The one exception is `office_egress`, the
    corporate egress ranges of offices (network_ranges kind `corporate_egress`): a sign-in
    from there places the user at that office, so "office, then 7,000 km away 40 minutes
    later" is measured. Without `office_egress`, every known egress address is ignored.
    `signins` is sessionized events; pass the previous day too so the first sign-in of a day
    has its predecessor (no hop over ~22 h can beat 900 km/h).
    """
    office = ip_in_cidrs(F.col("src_ip"), office_egress or [])
    s = signins.where(
        _is_success_signin(signins)
        & F.col("src_lat").isNotNull()
        & F.col("src_lon").isNotNull()
        & (~F.coalesce(F.col("src_is_known_egress"), F.lit(False)) | office)
        & (~F.coalesce(F.col("src_is_internal"), F.lit(False)) | office)
    )
    w = Window.partitionBy("user_key").orderBy("event_time", "event_uid")
    lat1, lon1 = F.radians(F.lag("src_lat").over(w)), F.radians(F.lag("src_lon").over(w))
    lat2, lon2 = F.radians("src_lat"), F.radians("src_lon")
    a = F.pow(F.sin((lat2 - lat1) / 2), 2) + F.cos(lat1) * F.cos(lat2) * F.pow(
        F.sin((lon2 - lon1) / 2), 2
    )
    hops = (
        s.withColumn("_km", F.lit(2 * 6371.0088) * F.asin(F.least(F.lit(1.0), F.sqrt(a))))
        .withColumn("_prev_time", F.lag("event_time").over(w))
        .withColumn("_prev_country", F.lag("src_country").over(w))
        .withColumn("_prev_city", F.lag("src_city").over(w))
        .withColumn(
            "_seconds", F.col("event_time").cast("double") - F.col("_prev_time").cast("double")
        )
        # a clock resolution of one minute: two sign-ins in the same second are not infinitely fast
        .withColumn("_kmh", F.col("_km") / (F.greatest(F.col("_seconds"), F.lit(60.0)) / 3600.0))
        .where(
            F.col("session_id").isNotNull()
            & F.col("_prev_time").isNotNull()  # least() skips nulls: the first sign-in has no hop
            & (F.col("_km") >= cfg.travel_min_distance_km)
            & (F.col("_kmh") > cfg.travel_speed_kmh)
        )
    )
    prev_place = F.concat_ws(", ", F.col("_prev_city"), country_name(F.col("_prev_country")))
    here = F.concat_ws(", ", F.col("src_city"), country_name(F.col("src_country")))
    detail = F.concat(
        F.lit("sign-in from "), here, F.lit(" "), _fmt(F.col("_km")), F.lit(" km from the previous sign-in ("),
        prev_place, F.lit(") "), _duration_text(F.col("_seconds")), F.lit(" earlier: "), _fmt(F.col("_kmh")),
        F.lit(" km/h, above "), _fmt(F.lit(cfg.travel_speed_kmh)), F.lit(" km/h"),
    )  # fmt: skip
    sig = make_signal(
        "impossible_travel",
        F.col("_kmh"),
        F.lit(cfg.travel_speed_kmh),
        cfg,
        detail,
        F.col("source"),
    )
    return strongest(hops.select("run_date", "session_id", sig.alias("signal")))


def new_country(sessionized: DataFrame, baselines: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """A successful sign-in from a country absent from the user's 90-day history.

    In the learning period the comparator is the peer group: a country none of the peers
    signed in from. Known egress/VPN addresses are ignored (they geolocate to the gateway).
    """
    s = sessionized.where(
        _is_success_signin(sessionized)
        & F.col("src_country").isNotNull()
        & F.col("user_id").isNotNull()
        & ~F.coalesce(F.col("src_is_known_egress"), F.lit(False))
    ).select(
        "run_date",
        "session_id",
        "user_id",
        "user_type",
        "peer_group",
        "src_country",
        "source",
        "event_time",
    )
    s = s.groupBy(
        "run_date", "session_id", "user_id", "user_type", "peer_group", "src_country"
    ).agg(F.min_by("source", "event_time").alias("source"))
    keyed = with_comparator(
        s,
        baselines,
        _baseline_account_type(F.col("user_type")),
        F.col("user_id"),
        ["src_countries"],
    )
    fired = keyed.where(
        history_ok("cmp", cfg)
        & _has_history(F.col("cmp_src_countries"))
        & ~_seen_within(F.col("cmp_src_countries"), F.col("src_country"), F.col("run_date"), None)
    )
    who = _comparator_text(F.col("in_learning"), F.col("peer_group"), "this account")
    detail = F.concat(
        F.lit("first sign-in from "), country_name(F.col("src_country")), F.lit(" for "), who,
        F.lit(" in "), F.lit(str(_country_window_days(cfg))), F.lit(" days"),
    )  # fmt: skip
    sig = make_signal(
        "new_country", F.lit(0.0), F.lit(1.0), cfg, detail, F.col("source"), scaled=False
    )
    return strongest(fired.select("run_date", "session_id", sig.alias("signal")))


def _country_window_days(cfg: ScoringSettings) -> int:
    return 90  # the baselines' country/device window (BaselineSettings.country_device_window_days)


def _baseline_account_type(user_type: Column) -> Column:
    return F.when(user_type == "service", F.lit("service_account")).otherwise(F.lit("user"))


def new_device(sessions: DataFrame, baselines: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """A successful session from a device the account has not used in `new_device_window_days`.

    Devices are personal, so a learning account is compared with its own short history (a
    peer group's devices say nothing about this one's); no history, no signal.
    """
    s = sessions.where(
        (F.col("success_count") > 0) & F.col("device_id").isNotNull() & F.col("user_id").isNotNull()
    )
    keyed = with_comparator(
        s, baselines, _baseline_account_type(F.col("user_type")), F.col("user_id"), ["devices"]
    )
    days = cfg.new_device_window_days
    fired = keyed.where(
        history_ok("own", cfg)
        & _has_history(F.col("own_devices"))
        & ~_seen_within(F.col("own_devices"), F.col("device_id"), F.col("run_date"), days)
    )
    last = F.try_element_at(F.col("own_devices"), F.col("device_id"))["last_seen"]
    detail = F.concat(
        F.lit("sign-in from device "), F.col("device_id"),
        F.when(last.isNotNull(), F.concat(F.lit(", last used "), last.cast("string")))
        .otherwise(F.lit(", never used by this account")),
        F.lit(" (not in the last "), F.lit(str(days)), F.lit(" days)"),
    )  # fmt: skip
    sig = make_signal(
        "new_device",
        F.lit(0.0),
        F.lit(1.0),
        cfg,
        detail,
        F.try_element_at(F.col("sources"), F.lit(1)),
        scaled=False,
    )
    return strongest(fired.select("run_date", "session_id", sig.alias("signal")))


def _with_hour_shares(
    sessions: DataFrame, baselines: DataFrame, extra: tuple[str, ...] = ()
) -> DataFrame:
    keyed = with_comparator(
        sessions,
        baselines,
        _baseline_account_type(F.col("user_type")),
        F.col("user_id"),
        ["hour_of_week", "tz", *extra],
    )
    tz = F.coalesce(F.col("own_tz"), F.lit("UTC"))
    bucket = hour_of_week(F.col("session_start"), tz)
    own_share = _hour_share(F.col("cmp_hour_of_week"), bucket)
    peer_share = _hour_share(F.col("peer_hour_of_week"), bucket)
    return (
        keyed.withColumn("_bucket", bucket)
        .withColumn("_tz", tz)
        .withColumn("_own_share", own_share)
        .withColumn("_peer_share", F.coalesce(peer_share, own_share))
    )


def _off_hours_condition(cfg: ScoringSettings) -> Column:
    limit = cfg.off_hours_max_share
    return (
        history_ok("cmp", cfg)
        & F.col("_own_share").isNotNull()
        & (F.col("_own_share") < limit)
        & (F.col("_peer_share") < limit)
    )


def _hour_text() -> Column:
    local = F.from_utc_timestamp(F.col("session_start"), F.col("_tz"))
    return F.concat(F.date_format(local, "EEEE HH:00"), F.lit(" "), F.col("_tz"))


def off_hours(sessions: DataFrame, baselines: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """Activity in an hour of week that is rare for the account AND for its peer group.

    Rare means under `off_hours_max_share` of the habit window's activity falls in that
    hour-of-week bucket (local time of the account). A learning account uses its peers'
    habits for both sides.
    """
    s = sessions.where((F.col("success_count") > 0) & F.col("user_id").isNotNull())
    shares = _with_hour_shares(s, baselines)
    fired = shares.where(_off_hours_condition(cfg))
    detail = F.concat(
        F.lit("active on "), _hour_text(), F.lit(", an hour holding "), _fmt(F.col("_own_share") * 100, 1),
        F.lit("% of "), _comparator_text(F.col("in_learning"), F.col("peer_group"), "this account's"),
        F.lit(" activity and "), _fmt(F.col("_peer_share") * 100, 1), F.lit("% of its peers'"),
    )  # fmt: skip
    sig = make_signal(
        "off_hours", F.col("_own_share"), F.lit(cfg.off_hours_max_share), cfg, detail,
        F.try_element_at(F.col("sources"), F.lit(1)), scaled=False,
    )  # fmt: skip
    return strongest(fired.select("run_date", "session_id", sig.alias("signal")))


def privileged_anomaly(
    sessions: DataFrame, baselines: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """Privileged logons or actions by an account whose baseline has none, or at an off hour.

    A learning account is compared with its peer group: privileged work none of its peers do.
    """
    s = sessions.where((F.col("privileged_count") > 0) & F.col("user_id").isNotNull())
    keyed = _with_hour_shares(s, baselines, ("privileged_actions_total", "days_observed"))
    history = history_ok("cmp", cfg) & (F.coalesce(F.col("cmp_days_observed"), F.lit(0)) > 0)
    never = history & (F.coalesce(F.col("cmp_privileged_actions_total"), F.lit(0)) == 0)
    odd_hour = _off_hours_condition(cfg)
    fired = keyed.where(never | odd_hour)
    who = _comparator_text(F.col("in_learning"), F.col("peer_group"), "this account")
    detail = F.when(
        never,
        F.concat(
            _fmt(F.col("privileged_count")), F.lit(" privileged logon(s)/action(s); "), who,
            F.lit(" has none in its baseline"),
        ),
    ).otherwise(
        F.concat(
            _fmt(F.col("privileged_count")), F.lit(" privileged logon(s)/action(s) on "), _hour_text(),
            F.lit(", outside the account's and its peers' usual hours"),
        )
    )  # fmt: skip
    detail = F.when(
        never & odd_hour, F.concat(detail, F.lit(", at "), _hour_text(), F.lit(" (an off hour)"))
    ).otherwise(detail)
    # value: how many of the two reasons hold (no privileges in the baseline; an off hour)
    reasons = F.when(never, 1).otherwise(0) + F.when(odd_hour, 1).otherwise(0)
    sig = make_signal(
        "privileged_anomaly",
        reasons,
        F.lit(1),
        cfg,
        detail,
        F.try_element_at(F.col("sources"), F.lit(1)),
    )
    return strongest(fired.select("run_date", "session_id", sig.alias("signal")))


# --- identity: failures ---------------------------------------------------------------------


def _windows(df: DataFrame, minutes: int) -> DataFrame:
    """Each event in two overlapping windows (half-window slide): a burst straddling a window
    edge is still counted whole in one of them."""
    return df.withColumn(
        "_w", F.window("event_time", f"{minutes} minutes", f"{max(minutes // 2, 1)} minutes")
    )


def password_spray(
    sessionized: DataFrame, auth_sources: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """One source failing against many distinct existing accounts within `spray_window_minutes`.

    Counts accounts that exist in the directory (user_id known): internet background
    guessing of `root`/`admin` is not a spray against the organisation. Fires on the source's
    view (`auth_sources`) and on any session from that source that then succeeded.
    """
    a = sessionized.where(F.col("src_ip").isNotNull())
    win = _windows(a, cfg.spray_window_minutes)
    per = (
        win.groupBy("run_date", "src_ip", "_w")
        .agg(
            F.countDistinct(
                F.when(
                    (F.col("status") == "failure") & F.col("user_id").isNotNull(), F.col("user_id")
                )
            ).alias("_failed_users"),
            F.countDistinct(F.col("user_key")).alias("_users"),
            F.min_by("source", "event_time").alias("source"),
        )
        .where(
            (F.col("_failed_users") >= cfg.spray_min_users)
            & (F.col("_failed_users") >= F.col("_users") * cfg.spray_min_failed_share)
        )
    )
    top = per.groupBy("run_date", "src_ip").agg(
        F.max_by(F.struct("_failed_users", "_users", "source", "_w"), "_failed_users").alias("t")
    )
    detail = F.concat(
        F.lit("password spray from "), F.col("src_ip"), F.lit(": failed sign-ins against "),
        _fmt(F.col("t._failed_users")), F.lit(" accounts within "), F.lit(str(cfg.spray_window_minutes)),
        F.lit(" minutes (threshold "), F.lit(str(cfg.spray_min_users)), F.lit(")"),
    )  # fmt: skip
    sig = make_signal(
        "password_spray",
        F.col("t._failed_users"),
        F.lit(cfg.spray_min_users),
        cfg,
        detail,
        F.col("t.source"),
    )
    on_source = top.join(
        auth_sources.select("run_date", "src_ip", "session_id"), ["run_date", "src_ip"]
    ).select("run_date", "session_id", sig.alias("signal"))
    # sessions from the spraying source that got in: the account may be compromised
    succeeded = (
        a.where(F.col("status") == "success")
        .select("run_date", "src_ip", "session_id", "user_id")
        .distinct()
        .join(top, ["run_date", "src_ip"])
    )
    detail_ok = F.concat(detail, F.lit("; this account then signed in successfully from it"))
    sig_ok = make_signal(
        "password_spray",
        F.col("t._failed_users"),
        F.lit(cfg.spray_min_users),
        cfg,
        detail_ok,
        F.col("t.source"),
    )
    on_victims = succeeded.select("run_date", "session_id", sig_ok.alias("signal"))
    return strongest(on_source.unionByName(on_victims))


def brute_force(sessionized: DataFrame, auth_sources: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """Many failed sign-ins against one existing account within `brute_force_window_minutes`.

    Fires on that account's sessions in the window (from any source: distributed guessing
    counts) and, when one source alone made the failures, on that source's view.
    """
    a = sessionized.where(F.col("user_id").isNotNull())
    win = _windows(a, cfg.brute_force_window_minutes)
    failed = F.col("status") == "failure"
    per_user = (
        win.groupBy("run_date", "user_id", "_w")
        .agg(
            F.sum(F.when(failed, 1).otherwise(0)).alias("_failures"),
            F.countDistinct(F.when(failed, F.col("src_ip"))).alias("_sources"),
            F.sum(F.when(F.col("status") == "success", 1).otherwise(0)).alias("_successes"),
            F.collect_set("session_id").alias("_sessions"),
            F.min_by("source", "event_time").alias("source"),
        )
        .where(F.col("_failures") >= cfg.brute_force_min_failures)
    )
    detail = F.concat(
        _fmt(F.col("_failures")), F.lit(" failed sign-ins against "), F.col("user_id"), F.lit(" from "),
        _fmt(F.col("_sources")), F.lit(" source(s) within "), F.lit(str(cfg.brute_force_window_minutes)),
        F.lit(" minutes (threshold "), F.lit(str(cfg.brute_force_min_failures)), F.lit(")"),
        F.when(F.col("_successes") > 0, F.lit(", followed by a successful sign-in")).otherwise(F.lit("")),
    )  # fmt: skip
    sig = make_signal(
        "brute_force",
        F.col("_failures"),
        F.lit(cfg.brute_force_min_failures),
        cfg,
        detail,
        F.col("source"),
    )
    on_account = per_user.select(
        "run_date", F.explode("_sessions").alias("session_id"), sig.alias("signal")
    )
    per_source = (
        win.where(F.col("src_ip").isNotNull())
        .groupBy("run_date", "src_ip", "user_id", "_w")
        .agg(
            F.sum(F.when(failed, 1).otherwise(0)).alias("_failures"),
            F.min_by("source", "event_time").alias("source"),
        )
        .where(F.col("_failures") >= cfg.brute_force_min_failures)
    )
    detail_src = F.concat(
        F.lit("brute force from "), F.col("src_ip"), F.lit(": "), _fmt(F.col("_failures")),
        F.lit(" failed sign-ins against "), F.col("user_id"), F.lit(" within "),
        F.lit(str(cfg.brute_force_window_minutes)), F.lit(" minutes"),
    )  # fmt: skip
    sig_src = make_signal(
        "brute_force",
        F.col("_failures"),
        F.lit(cfg.brute_force_min_failures),
        cfg,
        detail_src,
        F.col("source"),
    )
    on_source = per_source.join(
        auth_sources.select("run_date", "src_ip", "session_id"), ["run_date", "src_ip"]
    ).select("run_date", "session_id", sig_src.alias("signal"))
    return strongest(on_account.unionByName(on_source))


# --- hosts reached: lateral movement ----------------------------------------------------------


def _first_time_hosts(
    sessionized: DataFrame, baselines: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    logons = (
        sessionized.where(
            _is_success_signin(sessionized)
            & F.col("dst_host").isNotNull()
            & F.col("user_id").isNotNull()
        )
        .groupBy("run_date", "session_id", "user_id", "user_type", "peer_group", "dst_host")
        .agg(F.min_by("source", "event_time").alias("source"))
    )
    keyed = with_comparator(
        logons,
        baselines,
        _baseline_account_type(F.col("user_type")),
        F.col("user_id"),
        ["dst_hosts"],
    )
    return keyed.where(
        history_ok("cmp", cfg)
        & _has_history(F.col("cmp_dst_hosts"))
        & ~_seen_within(F.col("cmp_dst_hosts"), F.col("dst_host"), F.col("run_date"), None)
    )


def first_time_host_access(
    sessionized: DataFrame, baselines: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """Successful logons to hosts the account never reached in the 180-day host window.

    A learning account is compared with its peer group: hosts none of its peers reached.
    """
    new = _first_time_hosts(sessionized, baselines, cfg)
    per = new.groupBy("run_date", "session_id").agg(
        F.sort_array(F.collect_set("dst_host")).alias("_hosts"),
        F.first("source").alias("source"),
        F.first("in_learning").alias("in_learning"),
        F.first("peer_group").alias("peer_group"),
    )
    who = _comparator_text(F.col("in_learning"), F.col("peer_group"), "this account")
    detail = F.concat(
        F.lit("first logon to "), F.array_join(F.slice("_hosts", 1, 5), ", "),
        F.when(F.size("_hosts") > 5, F.lit(" and more")).otherwise(F.lit("")),
        F.lit(" (never reached by "), who, F.lit(" in 180 days)"),
    )  # fmt: skip
    sig = make_signal(
        "first_time_host_access", F.size("_hosts"), F.lit(1), cfg, detail, F.col("source")
    )
    return strongest(per.select("run_date", "session_id", sig.alias("signal")))


def lateral_fan_out(
    sessionized: DataFrame, baselines: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """An account reaching at least `lateral_new_hosts` first-time hosts in one day.

    Fires on each of the account's sessions that reached one of them.
    """
    new = _first_time_hosts(sessionized, baselines, cfg)
    per_day = (
        new.groupBy("run_date", "user_id")
        .agg(
            F.sort_array(F.collect_set("dst_host")).alias("_hosts"),
            F.collect_set("session_id").alias("_sessions"),
            F.first("source").alias("source"),
        )
        .where(F.size("_hosts") >= cfg.lateral_new_hosts)
    )
    detail = F.concat(
        F.lit("reached "), F.size("_hosts").cast("string"), F.lit(" hosts for the first time today ("),
        F.array_join(F.slice("_hosts", 1, 5), ", "),
        F.when(F.size("_hosts") > 5, F.lit(", ...")).otherwise(F.lit("")),
        F.lit("); threshold "), F.lit(str(cfg.lateral_new_hosts)),
    )  # fmt: skip
    sig = make_signal(
        "lateral_fan_out",
        F.size("_hosts"),
        F.lit(cfg.lateral_new_hosts),
        cfg,
        detail,
        F.col("source"),
    )
    return strongest(
        per_day.select("run_date", F.explode("_sessions").alias("session_id"), sig.alias("signal"))
    )


# --- network ---------------------------------------------------------------------------------


def exfiltration_volume(
    network_days: DataFrame, baselines: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """Bytes sent to the internet far above the entity's own AND its peers' robust baseline.

    Threshold = max(median + k*MAD of the entity, median + k*MAD of its peer group,
    `exfil_min_bytes`), k = `exfil_mad_multiplier`. A learning entity uses its peers' only;
    with neither baseline there is nothing to compare with and the signal stays silent.
    """
    n = network_days.where((F.col("entity_type") == "host") & (F.col("bytes_out_external") > 0))
    keyed = with_comparator(
        n,
        baselines,
        F.col("entity_type"),
        F.col("entity_id"),
        ["bytes_out_median", "bytes_out_mad", "days_observed"],
    )
    k = cfg.exfil_mad_multiplier
    own_ok = (
        ~F.col("in_learning")
        & history_ok("own", cfg)
        & (F.coalesce(F.col("own_days_observed"), F.lit(0)) > 0)
    )
    own_thr = F.when(
        own_ok,
        F.col("own_bytes_out_median") + k * F.coalesce(F.col("own_bytes_out_mad"), F.lit(0.0)),
    )
    peer_thr = F.when(
        history_ok("peer", cfg),
        F.col("peer_bytes_out_median") + k * F.coalesce(F.col("peer_bytes_out_mad"), F.lit(0.0)),
    )
    threshold = F.greatest(
        F.coalesce(own_thr, F.lit(0.0)),
        F.coalesce(peer_thr, F.lit(0.0)),
        F.lit(float(cfg.exfil_min_bytes)),
    )
    scored = keyed.withColumn("_thr", threshold).where(
        (own_thr.isNotNull() | peer_thr.isNotNull()) & (F.col("bytes_out_external") > F.col("_thr"))
    )
    detail = F.concat(
        F.lit("sent "), _bytes_text(F.col("bytes_out_external")), F.lit(" to the internet today; usual "),
        F.when(own_ok, _bytes_text(F.col("own_bytes_out_median"))).otherwise(F.lit("(learning)")),
        F.lit(", peers "), F.coalesce(_bytes_text(F.col("peer_bytes_out_median")), F.lit("(none)")),
        F.lit("; threshold "), _bytes_text(F.col("_thr")),
    )  # fmt: skip
    sig = make_signal(
        "exfiltration_volume",
        F.col("bytes_out_external"),
        F.col("_thr"),
        cfg,
        detail,
        F.try_element_at(F.col("sources"), F.lit(1)),
    )
    return strongest(scored.select("run_date", "session_id", sig.alias("signal")))


def inbound_scan(network_days: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """An outside source probing at least `scan_min_targets` host:port pairs, mostly unanswered."""
    n = network_days.where(
        (F.col("entity_type") == "ip")
        & ~F.coalesce(F.col("src_is_internal"), F.lit(False))
        & ~F.coalesce(F.col("src_is_known_egress"), F.lit(False))
        & (F.col("dst_endpoints") >= cfg.scan_min_targets)
        & (F.col("failure_count") >= F.col("event_count") * cfg.scan_min_failed_ratio)
    )
    detail = F.concat(
        F.col("entity_id"), F.lit(" probed "), _fmt(F.col("dst_endpoints")), F.lit(" host:port pairs ("),
        _fmt(F.col("dst_ports")), F.lit(" ports); "), _fmt(F.col("failure_count") * 100 / F.col("event_count")),
        F.lit("% of its connections got no answer"),
    )  # fmt: skip
    sig = make_signal(
        "inbound_scan",
        F.col("dst_endpoints"),
        F.lit(cfg.scan_min_targets),
        cfg,
        detail,
        F.try_element_at(F.col("sources"), F.lit(1)),
    )
    return strongest(n.select("run_date", "session_id", sig.alias("signal")))


def unsolicited_inbound(network_days: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """An outside source opening connections to internal hosts that are not internet-facing.

    Workstations and internal servers are not meant to be reachable from the internet
    (NAT and firewalls keep them so); a connection attempt from outside to one is a probe
    of an exposed host (GuardDuty calls it a port probe of an unprotected port). Hosts the
    inventory tags `internet_facing_tag` (gateways, bastions, web servers) are expected to
    receive such traffic and are not counted.
    """
    n = network_days.where(
        (F.col("entity_type") == "ip") & (F.col("unsolicited_inbound") >= cfg.inbound_min_attempts)
    )
    detail = F.concat(
        F.col("entity_id"),
        F.lit(" opened "),
        _fmt(F.col("unsolicited_inbound")),
        F.lit(" connection(s) from outside to internal hosts that are not internet-facing"),
    )
    sig = make_signal(
        "unsolicited_inbound",
        F.col("unsolicited_inbound"),
        F.lit(cfg.inbound_min_attempts),
        cfg,
        detail,
        F.try_element_at(F.col("sources"), F.lit(1)),
    )
    return strongest(n.select("run_date", "session_id", sig.alias("signal")))


# --- endpoints -------------------------------------------------------------------------------


def rare_process_pair(events: DataFrame, baselines: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """A parent->child process pair new to the host and run on at most `rare_pair_max_hosts`
    other hosts of the fleet in the baseline window.

    A host in its learning period has no own history to speak of: only the fleet rarity counts.
    Before the fleet has history (fewer than `rare_pair_max_hosts` + 1 hosts with
    `min_history_days` of it: a new lake, day one), today's fleet stands in for the past: the
    pair ran on at most `rare_pair_max_hosts` of today's hosts, and there were at least
    `rare_pair_min_fleet_hosts` of them (with fewer, rare means nothing).
    """
    procs = (
        events.where((F.col("class_name") == "process") & F.col("process_name").isNotNull())
        .withColumn("host", F.coalesce("device_id", "dst_host"))
        .where(F.col("host").isNotNull() & F.col("parent_process_name").isNotNull())
        .withColumn("pair", process_pair(F.col("parent_process_name"), F.col("process_name")))
        .groupBy("run_date", "host", "pair")
        .agg(F.min_by("source", "event_time").alias("source"), F.count(F.lit(1)).alias("_n"))
    )
    hosts = baselines.where(F.col("entity_type") == "host")
    fleet = (
        hosts.select("run_date", "entity_id", F.explode(F.map_keys("process_pairs")).alias("pair"))
        .groupBy("run_date", "pair")
        .agg(F.countDistinct("entity_id").alias("_fleet_hosts"))
    )
    fleet_known = (
        hosts.where(
            _has_history(F.col("process_pairs"))
            & (F.datediff(F.col("run_date"), F.col("first_seen")) >= cfg.min_history_days)
        )
        .groupBy("run_date")
        .agg(F.count(F.lit(1)).alias("_hosts_with_history"))
    )
    today_pair = procs.groupBy("run_date", "pair").agg(
        F.countDistinct("host").alias("_today_hosts")
    )
    today_fleet = procs.groupBy("run_date").agg(F.countDistinct("host").alias("_fleet_today"))
    keyed = with_comparator(
        procs.withColumn("entity_type", F.lit("host")),
        baselines,
        F.lit("host"),
        F.col("host"),
        ["process_pairs"],
    )
    on_host = _seen_within(F.col("own_process_pairs"), F.col("pair"), F.col("run_date"), None)
    day_one = F.col("_hosts_with_history") <= cfg.rare_pair_max_hosts
    rare = F.when(
        day_one,
        (F.col("_today_hosts") <= cfg.rare_pair_max_hosts)
        & (F.col("_fleet_today") >= cfg.rare_pair_min_fleet_hosts),
    ).otherwise(F.col("_fleet_hosts") <= cfg.rare_pair_max_hosts)
    scored = (
        keyed.join(fleet, ["run_date", "pair"], "left")
        .join(fleet_known, ["run_date"], "left")
        .join(today_pair, ["run_date", "pair"])
        .join(today_fleet, ["run_date"])
        .withColumn("_fleet_hosts", F.coalesce("_fleet_hosts", F.lit(0)))
        .withColumn("_hosts_with_history", F.coalesce("_hosts_with_history", F.lit(0)))
        .where(
            (
                F.col("in_learning")
                | (history_ok("own", cfg) & _has_history(F.col("own_process_pairs")) & ~on_host)
            )
            & rare
        )
    )
    detail = F.concat(
        F.regexp_replace(F.col("pair"), ">", " started "), F.lit(" on "), F.col("host"),
        F.when(
            day_one,
            F.concat(
                F.lit(": on "), F.col("_today_hosts").cast("string"), F.lit(" of "),
                F.col("_fleet_today").cast("string"),
                F.lit(" hosts today (no fleet history yet: today's fleet stands in)"),
            ),
        ).otherwise(
            F.concat(
                F.lit(": never on this host, on "), F.col("_fleet_hosts").cast("string"),
                F.lit(" host(s) of the fleet in the baseline window"),
            )
        ),
    )  # fmt: skip
    count = F.when(day_one, F.col("_today_hosts") - 1).otherwise(F.col("_fleet_hosts"))
    sig = make_signal(
        "rare_process_pair", F.lit(1.0) / (count + 1), F.lit(1.0 / (cfg.rare_pair_max_hosts + 1)),
        cfg, detail, F.col("source"), scaled=False,
    )  # fmt: skip
    rows = scored.select(
        "run_date",
        view_session_id(F.col("run_date"), "host", F.col("host")).alias("session_id"),
        sig.alias("signal"),
    )
    return strongest(rows)


# --- cloud -----------------------------------------------------------------------------------


def risky_iam_change(events: DataFrame, baselines: DataFrame, cfg: ScoringSettings) -> DataFrame:
    """IAM writes (CreateAccessKey, Attach*/Put*Policy, CreateUser, UpdateAssumeRolePolicy, ...)
    by a principal with no IAM writes in its baseline (its peers', while learning).

    A principal with no baseline at all (never seen before) counts as having none.
    """
    iam = list(cfg.iam_write_actions)
    calls = (
        events.where((F.col("class_name") == "api") & F.col("cloud_action").isin(*iam))
        .withColumn("principal", F.coalesce("user_id", F.lower("user_name_raw")))
        .where(F.col("principal").isNotNull())
        .groupBy("run_date", "principal")
        .agg(
            F.sort_array(F.collect_set("cloud_action")).alias("_actions"),
            F.count(F.lit(1)).alias("_writes"),
            F.sum(F.when(F.col("status") == "failure", 1).otherwise(0)).alias("_denied"),
            F.max("user_type").alias("user_type"),
            F.max("peer_group").alias("peer_group"),
            F.min_by("source", "event_time").alias("source"),
        )
    )
    keyed = with_comparator(
        calls,
        baselines,
        _baseline_account_type(F.col("user_type")),
        F.col("principal"),
        ["cloud_actions"],
    )
    had_iam = F.exists(
        F.coalesce(F.map_keys(F.col("cmp_cloud_actions")), F.array().cast("array<string>")),
        lambda k: F.element_at(F.split(k, ":"), -1).isin(*iam),
    )
    # a principal nobody has a baseline for counts as having none, once the lake has history
    lake_days = baselines.groupBy("run_date").agg(
        F.max(F.datediff(F.col("run_date"), F.col("first_seen"))).alias("_lake_days")
    )
    known = history_ok("cmp", cfg) | (
        F.col("cmp_first_seen").isNull()
        & (F.coalesce("_lake_days", F.lit(0)) >= cfg.min_history_days)
    )
    fired = keyed.join(lake_days, "run_date", "left").where(known & ~had_iam)
    who = _comparator_text(F.col("in_learning"), F.col("peer_group"), "a principal")
    detail = F.concat(
        F.array_join(F.col("_actions"), ", "), F.lit(" ("), _fmt(F.col("_writes")), F.lit(" IAM write(s)"),
        F.when(F.col("_denied") > 0, F.concat(F.lit(", "), _fmt(F.col("_denied")), F.lit(" denied"))).otherwise(F.lit("")),
        F.lit(") by "), F.col("principal"), F.lit("; "), who, F.lit(" with no IAM changes in its baseline"),
    )  # fmt: skip
    sig = make_signal("risky_iam_change", F.col("_writes"), F.lit(1), cfg, detail, F.col("source"))
    rows = fired.select(
        "run_date",
        view_session_id(F.col("run_date"), "cloud", F.col("principal")).alias("session_id"),
        sig.alias("signal"),
    )
    return strongest(rows)


# --- peers for hosts -------------------------------------------------------------------------


def host_peer_baselines(baselines: DataFrame, host_groups: DataFrame) -> DataFrame:
    """Peer-group profiles for hosts, in the gold.baselines layout (BASELINES columns).

    gold.baselines compares accounts with their directory peer group; hosts have none there.
    Here a host's peers are the hosts of its group (`host_groups`: asset_id, peer_group;
    e.g. `hosts/workstation` from the asset type), and the group's bytes statistics are the
    median and MAD over every member-day of the habit window, as for account peer groups.
    """
    hosts = baselines.where(F.col("entity_type") == "host").join(
        host_groups.select(
            F.col("asset_id").alias("entity_id"), F.col("peer_group").alias("_group")
        ),
        "entity_id",
    )
    days = hosts.select("run_date", "_group", "entity_id", F.explode("daily_values").alias("v"))
    first = hosts.groupBy("run_date", "_group").agg(F.min("first_seen").alias("first_seen"))
    per = days.groupBy("run_date", "_group").agg(
        F.array_sort(
            F.collect_list(F.coalesce(F.col("v.bytes_out"), F.lit(0)).cast("double"))
        ).alias("_bo"),
        F.countDistinct("entity_id").cast("int").alias("members_observed"),
    )
    per = per.join(first, ["run_date", "_group"]).withColumn(
        "bytes_out_median", median_of_sorted(F.col("_bo"))
    )
    per = per.withColumn(
        "bytes_out_mad",
        median_of_sorted(
            F.array_sort(F.transform("_bo", lambda x: F.abs(x - F.col("bytes_out_median"))))
        ),
    )
    values = {
        "run_date": F.col("run_date"),
        "entity_type": F.lit("peer_group"),
        "entity_id": F.col("_group"),
        "in_learning": F.lit(False),
        "compare_to_type": F.lit("peer_group"),
        "compare_to": F.col("_group"),
        "days_observed": F.size("_bo"),
        "first_seen": F.col("first_seen"),
        "members_observed": F.col("members_observed"),
        "bytes_out_median": F.col("bytes_out_median"),
        "bytes_out_mad": F.col("bytes_out_mad"),
    }
    return per.select(
        *[
            (values[f.name] if f.name in values else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in BASELINES.schema.fields
        ]
    )
