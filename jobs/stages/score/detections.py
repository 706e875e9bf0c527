"""Sigma detections as signals: every rule that matched today is a signal `sigma.<rule>` on the
host the event happened on, and on the acting account when the event names one.

Weight (docs/scoring.md, "Detections"): the rule's level sets its points
(`detections.level_points`: informational 5, low 20, medium 45, high 80, critical 95); a rule
that fired on more than `detections.noisy_hosts` hosts of the fleet that day is noisy and adds
at most `detections.noisy_max_points` (below the high band): it raises attention, it cannot
alone put an entity where policies block. Detections are absolute indicators: they need no
history of the entity, so they count from a host's first day.

The signal's `value` is how many of the entity's events matched that day, its `threshold` the
rule's level as a rank (1 informational .. 5 critical, for `detection('high')` in policies).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.config import DETECTION_LEVELS, DetectionSettings
from jobs.detections.compiler import CompiledRule
from jobs.detections.evaluate import MATCH_COLUMN, match_events
from jobs.stages.score.sessions import event_host, user_key, view_session_id

__all__ = ["acting_account", "detection_matches", "detection_signals", "rule_catalogue"]

# Accounts a Windows event names that are the machine itself, not someone acting.
_SYSTEM_ACCOUNTS = (
    "system",
    "local service",
    "network service",
    "anonymous logon",
    "nt authority\\system",
    "nt authority\\local service",
    "nt authority\\network service",
    "nt authority\\anonymous logon",
    "-",
)


def acting_account(events: DataFrame) -> Column:
    """The account an event names as acting (normalize's user_name_raw), as the sessions key
    it; none for machine accounts (name$) and the built-in service identities."""
    raw = F.lower(F.trim(F.col("user_name_raw")))
    bare = F.regexp_extract(raw, r"(?s)([^\\]+)$", 1)
    machine = raw.endswith("$") | raw.isin(*_SYSTEM_ACCOUNTS) | bare.isin(*_SYSTEM_ACCOUNTS)
    return F.when(raw.isNotNull() & (raw != "") & ~machine, user_key(events))


def detection_matches(events: DataFrame, rules: Sequence[CompiledRule]) -> DataFrame:
    """(run_date, source, event_time, host, account, user_id, rule): one row per event and rule
    that matched it, in one pass over `events` (jobs.detections.evaluate)."""
    keyed = events.select(
        "*", event_host().alias("_host"), acting_account(events).alias("_account")
    )
    return match_events(
        keyed,
        rules,
        keep=["run_date", "source", "event_time", "_host", "_account", "user_id"],
    ).withColumnsRenamed({"_host": "host", "_account": "account"})


def rule_catalogue(
    spark: SparkSession, rules: Sequence[CompiledRule], cfg: DetectionSettings
) -> DataFrame:
    """One row per rule: what a signal says about it and its points."""
    rows = [
        (
            r.slug,
            r.rule.title,
            r.rule.level,
            DETECTION_LEVELS.index(r.rule.level) + 1,
            float(cfg.level_points[r.rule.level]),
            ", ".join([*r.rule.techniques] or ["no ATT&CK technique"]),
        )
        for r in rules
    ]
    return spark.createDataFrame(
        rows,
        "rule string, title string, level string, level_rank int, points double, attack string",
    )


def _fmt(value: Column) -> Column:
    return F.format_number(value.cast("double"), 0)


def _signal(cfg: DetectionSettings, on: str) -> Column:
    noisy = F.col("fleet_hosts") > cfg.noisy_hosts
    points = F.when(noisy, F.least(F.col("points"), F.lit(cfg.noisy_max_points))).otherwise(
        F.col("points")
    )
    detail = F.concat(
        F.lit("Sigma rule '"), F.col("title"), F.lit("' ("), F.col("level"), F.lit("; ATT&CK "),
        F.col("attack"), F.lit("): "), _fmt(F.col("events")), F.lit(" event(s) "), F.lit(on),
        F.col("entity"), F.lit(" today"),
        F.when(
            noisy,
            F.concat(
                F.lit("; fired on "), _fmt(F.col("fleet_hosts")), F.lit(" hosts of the fleet (noisy above "),
                F.lit(str(cfg.noisy_hosts)), F.lit("): counted at most "), F.lit(f"{cfg.noisy_max_points:g}"),
                F.lit(" points"),
            ),
        ).otherwise(F.lit("")),
    )  # fmt: skip
    return F.struct(
        F.concat(F.lit("sigma."), F.col("rule")).alias("name"),
        F.col("events").cast("double").alias("value"),
        F.col("level_rank").cast("double").alias("threshold"),
        F.round(points, 1).cast("double").alias("contribution"),
        detail.alias("detail"),
        F.col("source").alias("source"),
    )


def detection_signals(
    matches: DataFrame, catalogue: DataFrame, auth_sessions: DataFrame, cfg: DetectionSettings
) -> DataFrame:
    """(run_date, session_id, signal) for every rule that matched: on the host's view, and on
    each sign-in session of the acting account that day (an account with no session that day
    is credited through its host only)."""
    fleet = matches.groupBy("run_date", MATCH_COLUMN).agg(
        F.countDistinct("host").alias("fleet_hosts")
    )
    rules = F.broadcast(catalogue)
    per_host = (
        matches.where(F.col("host").isNotNull())
        .groupBy("run_date", MATCH_COLUMN, "host")
        .agg(F.count(F.lit(1)).alias("events"), F.min_by("source", "event_time").alias("source"))
        .join(fleet, ["run_date", MATCH_COLUMN])
        .join(rules, MATCH_COLUMN)
        .withColumn("entity", F.col("host"))
    )
    on_host = per_host.select(
        "run_date",
        view_session_id(F.col("run_date"), "host", F.col("host")).alias("session_id"),
        _signal(cfg, "on ").alias("signal"),
    )
    per_account = (
        matches.where(F.col("account").isNotNull())
        .groupBy("run_date", MATCH_COLUMN, "account")
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.min_by("source", "event_time").alias("source"),
            F.sort_array(F.collect_set("host")).alias("_hosts"),
        )
        .join(fleet, ["run_date", MATCH_COLUMN])
        .join(rules, MATCH_COLUMN)
        .withColumn(
            "entity",
            F.concat(
                F.regexp_replace(F.col("account"), r"^unknown:", ""),
                F.lit(" on "),
                F.array_join(F.slice("_hosts", 1, 3), ", "),
            ),
        )
    )
    sessions = auth_sessions.select("run_date", F.col("user_key").alias("account"), "session_id")
    on_account = per_account.join(sessions, ["run_date", "account"]).select(
        "run_date", "session_id", _signal(cfg, "by ").alias("signal")
    )
    return on_host.unionByName(on_account)
