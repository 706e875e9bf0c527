"""gold.metrics_daily: each metric family on tiny hand-built frames with known answers, the
drift reference logged by training, and the stage on a tiny lake (bulk = date by date,
re-runs give the same rows)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import MetricsSettings, ScoringSettings
from jobs.core.context import RunContext
from jobs.core.tables import METRICS_DAILY
from jobs.model.drift_reference import feature_reference
from jobs.model.estimators import FEATURES
from jobs.stages.metrics import drift, families
from jobs.stages.metrics import stage as metrics_stage
from tests.conftest import test_settings

# Monday 5 .. Wednesday 7 October 2026
D1, D2, D3 = date(2026, 10, 5), date(2026, 10, 6), date(2026, 10, 7)


def ts(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def expected(spark: SparkSession, rows: list[tuple[date, str, dict[str, str], float]]) -> DataFrame:
    return spark.createDataFrame(
        [(d, m, dict(sorted(dims.items())), float(v)) for d, m, dims, v in rows],
        METRICS_DAILY.schema,
    )


def days(spark: SparkSession, *values: date) -> DataFrame:
    return spark.createDataFrame([(d,) for d in values], "run_date date")


def check(actual: DataFrame, want: DataFrame) -> None:
    """Whole-frame equality; both sides with their dimension keys in one order (a Python
    dict does not keep its order on the way into a Spark map)."""
    assertDataFrameEqual(families.conform_metrics(actual), families.conform_metrics(want))


# --- recommendations and analyst decisions ----------------------------------------------


def test_recommendations_per_action_domain_status_and_zero_totals(spark: SparkSession) -> None:
    recs = spark.createDataFrame(
        [
            (D1, "block", "identity", "approved"),
            (D1, "block", "identity", "approved"),
            (D1, "challenge", "identity", "alert_only"),
            (D1, "block", "network", "pending_approval"),
        ],
        "run_date date, action string, domain string, status string",
    )
    check(
        families.recommendation_metrics(recs, days(spark, D1, D2)),
        expected(
            spark,
            [
                (D1, "recommendations", {"action": "block", "domain": "identity", "status": "approved"}, 2),
                (D1, "recommendations", {"action": "challenge", "domain": "identity", "status": "alert_only"}, 1),
                (D1, "recommendations", {"action": "block", "domain": "network", "status": "pending_approval"}, 1),
                (D1, "recommendations_total", {}, 4),
                (D2, "recommendations_total", {}, 0),
            ],
        ),
    )  # fmt: skip


DECISIONS_DDL = (
    "decision_id string, rec_id string, run_date date, decision string, override_action string, "
    "verdict string, analyst string, reason string, decided_at timestamp, target_type string, "
    "target_id string, action string, policy_id string, source_file string"
)


def decision(
    rec: str,
    run_date: date,
    kind: str,
    decided_at: datetime,
    target: str = "u@x",
    verdict: str | None = None,
) -> tuple[Any, ...]:
    return (
        f"{rec}-{kind}-{decided_at.isoformat()}",
        rec,
        run_date,
        kind,
        "limit" if kind == "override" else None,
        verdict,
        "ana",
        "why",
        decided_at,
        "user",
        target,
        "block",
        "identity-sessions",
        "f.csv",
    )


def test_decisions_made_each_day_rates_and_latency_from_valid_from(spark: SparkSession) -> None:
    # recommendations of D1 are available from D2 00:00 (valid_from), of D2 from D3 00:00
    decisions = spark.createDataFrame(
        [
            decision("r1", D1, "approve", ts(D2, 6)),
            decision("r2", D1, "override", ts(D2, 12)),
            decision("r3", D1, "approve", ts(D2, 18)),
            decision("r4", D2, "reject", ts(D3, 0, 30)),
            decision("r5", D3, "approve", ts(D3 + timedelta(days=1), 9)),  # decided after D3
        ],
        DECISIONS_DDL,
    )

    def latency(day: date, kind: str, mean: float, median: float, most: float) -> list[Any]:
        return [
            (day, "approval_latency_hours", {"decision": kind, "stat": "mean"}, mean),
            (day, "approval_latency_hours", {"decision": kind, "stat": "median"}, median),
            (day, "approval_latency_hours", {"decision": kind, "stat": "max"}, most),
        ]

    check(
        families.analyst_decision_metrics(decisions, days(spark, D1, D2, D3)),
        expected(
            spark,
            [
                (D1, "analyst_decisions_total", {}, 0),
                (D2, "analyst_decisions", {"decision": "approve"}, 2),
                (D2, "analyst_decisions", {"decision": "override"}, 1),
                (D2, "analyst_decisions_total", {}, 3),
                (D2, "approval_rate", {}, 2 / 3),
                (D2, "override_rate", {}, 1 / 3),
                (D2, "rejection_rate", {}, 0),
                *latency(D2, "approve", 12, 12, 18),
                *latency(D2, "override", 12, 12, 12),
                (D3, "analyst_decisions", {"decision": "reject"}, 1),
                (D3, "analyst_decisions_total", {}, 1),
                (D3, "approval_rate", {}, 0),
                (D3, "override_rate", {}, 0),
                (D3, "rejection_rate", {}, 1),
                *latency(D3, "reject", 0.5, 0.5, 0.5),
            ],
        ),
    )


# --- detection quality --------------------------------------------------------------------

LOG_DDL = "run_date date, target_id string, action string, policy_mode string"


def test_precision_recall_fpr_against_analyst_verdicts(spark: SparkSession) -> None:
    log = spark.createDataFrame(
        [
            (D1, "alice", "block", "enforce"),
            (D1, "alice", "allow", "enforce"),  # another policy allowed: still detected
            (D1, "bob", "block", "shadow"),  # only a shadow policy acted: not detected
            (D1, "carol", "allow", "enforce"),
            (D2, "dave", "limit", "enforce"),
        ],
        LOG_DDL,
    )
    decisions = spark.createDataFrame(
        [
            decision("ra", D1, "approve", ts(D2, 8), "alice", "true_positive"),
            decision("rb", D1, "approve", ts(D2, 8), "bob", "malicious"),
            decision("rd", D2, "approve", ts(D3, 8), "dave", "true_positive"),
            decision("rd", D2, "reject", ts(D3, 9), "dave", "false_positive"),  # latest wins
            decision("rc", D1, "approve", ts(D2, 8), "carol", None),  # no verdict, no label
        ],
        DECISIONS_DDL,
    )
    units = families.verdict_units(decisions, families.entity_days(log))
    assertDataFrameEqual(
        units,
        spark.createDataFrame(
            [(D1, "alice", 1, True), (D1, "bob", 1, False), (D2, "dave", 0, True)],
            "run_date date, target_id string, label int, detected boolean",
        ),
    )
    dims = {"labels": "analyst_verdicts", "window_days": "30"}
    short = {"labels": "analyst_verdicts", "window_days": "1"}

    def outcomes(d: dict[str, str], tp: int, fp: int, fn: int, tn: int) -> list[Any]:
        return [
            (D2, "detection_outcomes", {**d, "outcome": "true_positive"}, tp),
            (D2, "detection_outcomes", {**d, "outcome": "false_positive"}, fp),
            (D2, "detection_outcomes", {**d, "outcome": "false_negative"}, fn),
            (D2, "detection_outcomes", {**d, "outcome": "true_negative"}, tn),
        ]

    check(
        families.confusion_metrics(units, days(spark, D2), 30, "analyst_verdicts"),
        expected(
            spark,
            [
                *outcomes(dims, 1, 1, 1, 0),
                (D2, "detection_precision", dims, 0.5),
                (D2, "detection_recall", dims, 0.5),
                (D2, "detection_false_positive_rate", dims, 1.0),
            ],
        ),
    )
    # a one-day window holds only dave: recall has no denominator and is left out
    check(
        families.confusion_metrics(units, days(spark, D2), 1, "analyst_verdicts"),
        expected(
            spark,
            [
                *outcomes(short, 0, 1, 0, 0),
                (D2, "detection_precision", short, 0.0),
                (D2, "detection_false_positive_rate", short, 1.0),
            ],
        ),
    )


@pytest.fixture(scope="module")
def incident_lake(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    """Two incidents: a workstation (owned by alice) on D1, and bob across midnight D2/D3."""
    scenarios = spark.createDataFrame(
        [
            ("exfil|ws-1", "ws-1", ts(D1, 10), ts(D1, 11)),
            ("brute|bob", "bob", ts(D2, 23), ts(D3, 1)),
        ],
        families.SCENARIOS,
    )
    owners = spark.createDataFrame([("ws-1", "alice")], "asset_id string, user_id string")
    log = spark.createDataFrame(
        [
            (D1, "ws-1", "isolate", "enforce"),  # the incident, acted on: TP
            (D1, "alice", "allow", "enforce"),  # the owner, not acted on: left out
            (D1, "carol", "challenge", "enforce"),  # benign, acted on: FP
            (D1, "dave", "allow", "enforce"),  # benign: TN
            (D2, "bob", "allow", "enforce"),  # incident day, missed: FN
            (D2, "ws-1", "limit", "enforce"),  # follow-up of ws-1's incident: left out
            (D2, "carol", "allow", "enforce"),  # TN
            (D3, "bob", "block", "enforce"),  # incident's second day, acted on: TP
            (D3, "erin", "allow", "enforce"),  # TN
        ],
        LOG_DDL,
    )
    incidents = families.ground_truth_incidents(scenarios, owners)
    return incidents, families.entity_days(log)


def test_ground_truth_labels_owner_and_follow_up_days(
    spark: SparkSession, incident_lake: tuple[DataFrame, DataFrame]
) -> None:
    incidents, entity_days = incident_lake
    units = families.ground_truth_units(incidents, entity_days, followup_days=7)
    assertDataFrameEqual(
        units,
        spark.createDataFrame(
            [
                (D1, "ws-1", 1, True),
                (D1, "carol", 0, True),
                (D1, "dave", 0, False),
                (D2, "bob", 1, False),
                (D2, "carol", 0, False),
                (D3, "bob", 1, True),
                (D3, "erin", 0, False),
            ],
            "run_date date, target_id string, label int, detected boolean",
        ),
    )
    dims = {"labels": "ground_truth", "window_days": "30"}
    check(
        families.confusion_metrics(units, days(spark, D3), 30, "ground_truth"),
        expected(
            spark,
            [
                (D3, "detection_outcomes", {**dims, "outcome": "true_positive"}, 2),
                (D3, "detection_outcomes", {**dims, "outcome": "false_positive"}, 1),
                (D3, "detection_outcomes", {**dims, "outcome": "false_negative"}, 1),
                (D3, "detection_outcomes", {**dims, "outcome": "true_negative"}, 3),
                (D3, "detection_precision", dims, 2 / 3),
                (D3, "detection_recall", dims, 2 / 3),
                (D3, "detection_false_positive_rate", dims, 1 / 4),
            ],
        ),
    )
    # without the follow-up rule, ws-1's action on D2 is a false positive
    no_followup = families.ground_truth_units(incidents, entity_days, followup_days=0)
    assert no_followup.where("run_date = DATE'2026-10-06' AND target_id = 'ws-1'").count() == 1


def test_time_to_detect_as_known_on_each_date(
    spark: SparkSession, incident_lake: tuple[DataFrame, DataFrame]
) -> None:
    incidents, entity_days = incident_lake
    dims = {"labels": "ground_truth", "window_days": "30"}
    # ws-1 started D1 10:00, first acted on by D1's recommendations (valid from D2 00:00): 14 h;
    # bob started D2 23:00, first acted on on D3 (valid from D4 00:00): 25 h, unknown on D2
    check(
        families.time_to_detect(incidents, entity_days, days(spark, D2, D3), 30, "ground_truth"),
        expected(
            spark,
            [
                (D2, "incidents", {**dims, "state": "detected"}, 1),
                (D2, "incidents", {**dims, "state": "undetected"}, 1),
                (D2, "mean_time_to_detect_hours", dims, 14),
                (D3, "incidents", {**dims, "state": "detected"}, 2),
                (D3, "incidents", {**dims, "state": "undetected"}, 0),
                (D3, "mean_time_to_detect_hours", dims, 19.5),
            ],
        ),
    )


# --- coverage, sources and data quality, risk -------------------------------------------


def test_policy_coverage_of_critical_assets_and_privileged_users(spark: SparkSession) -> None:
    population = spark.createDataFrame(
        [("critical_assets", "dc1"), ("critical_assets", "dc2"), ("privileged_users", "admin1")],
        "population string, entity_id string",
    )
    seen = spark.createDataFrame(
        [(D1, "dc1"), (D1, "admin1"), (D1, "ws-9"), (D2, "dc2")], "run_date date, entity_id string"
    )

    def coverage(day: date, population: str, covered: int, members: int) -> list[Any]:
        return [
            (day, "policy_coverage", {"population": population}, covered / members),
            (day, "policy_coverage_entities", {"population": population, "state": "covered"}, covered),
            (day, "policy_coverage_entities", {"population": population, "state": "uncovered"}, members - covered),
        ]  # fmt: skip

    check(
        families.coverage_metrics(seen, population, days(spark, D1, D2)),
        expected(
            spark,
            [
                *coverage(D1, "critical_assets", 1, 2),
                *coverage(D1, "privileged_users", 1, 1),
                *coverage(D2, "critical_assets", 1, 2),
                *coverage(D2, "privileged_users", 0, 1),
            ],
        ),
    )


def test_source_status_gaps_pass_rates_gates_and_volumes(spark: SparkSession) -> None:
    status = spark.createDataFrame(
        [(D1, "idp", "ok"), (D1, "windows", "degraded"), (D1, "sshd", "missing")],
        "run_date date, source string, status string",
    )
    dq = spark.createDataFrame(
        [
            (D1, "idp", "idp", True, True),
            (D1, "idp", "idp", True, False),
            (D1, "idp", "idp", False, False),  # a failed non-critical check: no gate
            (D1, "idp", "silver_events", True, True),
            (D1, "windows", "windows", False, True),  # a failed critical check: the gate
            (D1, "windows", "windows", True, True),
            (D1, "geolocation", "reference", False, False),  # reference data, not a source
        ],
        "run_date date, source string, suite string, success boolean, critical boolean",
    )
    recon = spark.createDataFrame(
        [(D1, "idp", 10, 8, 1, 1, True)],
        "run_date date, source string, raw_rows long, events long, quarantined long, "
        "duplicates long, balanced boolean",
    )
    check(
        families.source_metrics(status, dq, recon),
        expected(
            spark,
            [
                (D1, "source_status", {"source": "idp", "status": "ok"}, 1),
                (D1, "source_status", {"source": "windows", "status": "degraded"}, 1),
                (D1, "source_status", {"source": "sshd", "status": "missing"}, 1),
                (D1, "telemetry_gap", {"source": "windows", "status": "degraded"}, 1),
                (D1, "telemetry_gap", {"source": "sshd", "status": "missing"}, 1),
                (D1, "dq_pass_rate", {"source": "idp", "suite": "idp"}, 2 / 3),
                (D1, "dq_pass_rate", {"source": "idp", "suite": "silver_events"}, 1),
                (D1, "dq_pass_rate", {"source": "windows", "suite": "windows"}, 0.5),
                (D1, "dq_expectations_failed", {"source": "idp", "suite": "idp"}, 1),
                (D1, "dq_expectations_failed", {"source": "idp", "suite": "silver_events"}, 0),
                (D1, "dq_expectations_failed", {"source": "windows", "suite": "windows"}, 1),
                (D1, "dq_gate_failed", {"source": "idp"}, 0),
                (D1, "dq_gate_failed", {"source": "windows"}, 1),
                (D1, "telemetry_rows", {"source": "idp", "kind": "raw_rows"}, 10),
                (D1, "telemetry_rows", {"source": "idp", "kind": "events"}, 8),
                (D1, "telemetry_rows", {"source": "idp", "kind": "quarantined"}, 1),
                (D1, "telemetry_rows", {"source": "idp", "kind": "duplicates"}, 1),
                (D1, "reconciliation_balanced", {"source": "idp"}, 1),
            ],
        ),
    )


def test_geolocation_database_age_and_staleness_from_the_reference_rows(
    spark: SparkSession,
) -> None:
    from jobs.quality.results import geo_database_rows
    from jobs.reference.geo import GeoDatabase

    bundled = GeoDatabase("/pkg/GeoLite2-City.mmdb", "GeoLite2-City", date(2018, 7, 3), True, "x")
    own = GeoDatabase(
        "/srv/dbip-city-lite.mmdb", "DBIP-City-Lite", D1 - timedelta(days=3), False, "x"
    )
    rows = geo_database_rows(bundled, [D1], 45) + geo_database_rows(own, [D2], 45)
    dq = spark.createDataFrame(
        [(r["run_date"], r["source"], r["suite"], r["expectation"], r["success"], r["critical"], r["details"]) for r in rows]
        + [(D1, "idp", "idp", "idp.expect_x", False, True, None)],
        "run_date date, source string, suite string, expectation string, success boolean, "
        "critical boolean, details string",
    )  # fmt: skip
    age = (D1 - date(2018, 7, 3)).days
    check(
        families.reference_metrics(dq),
        expected(
            spark,
            [
                (D1, "geo_database_age_days", {"database_type": "GeoLite2-City", "build_date": "2018-07-03", "bundled": "true", "stale": "true"}, age),
                (D2, "geo_database_age_days", {"database_type": "DBIP-City-Lite", "build_date": (D1 - timedelta(days=3)).isoformat(), "bundled": "false", "stale": "false"}, 4),
            ],
        ),
    )  # fmt: skip


def test_risk_bands_histogram_and_model_version_in_use(spark: SparkSession) -> None:
    sessions = spark.createDataFrame(
        [(D1, "auth", 85, "3"), (D1, "auth", 10, None), (D1, "dns", 55, "3")],
        "run_date date, session_kind string, risk int, model_version string",
    )
    entities = spark.createDataFrame(
        [(D1, "user", 100), (D1, "user", 9), (D1, "host", 50), (D1, "ip", 90)],
        "run_date date, entity_type string, risk int",
    )
    check(
        families.risk_metrics(sessions, entities, ScoringSettings()),
        expected(
            spark,
            [
                (D1, "sessions_scored", {"session_kind": "auth"}, 2),
                (D1, "sessions_scored", {"session_kind": "dns"}, 1),
                (D1, "sessions_by_risk_band", {"band": "high"}, 1),
                (D1, "sessions_by_risk_band", {"band": "medium"}, 1),
                (D1, "sessions_by_risk_band", {"band": "low"}, 1),
                (D1, "entities_by_risk_band", {"band": "high", "entity_type": "user"}, 1),
                (D1, "entities_by_risk_band", {"band": "low", "entity_type": "user"}, 1),
                (D1, "entities_by_risk_band", {"band": "medium", "entity_type": "host"}, 1),
                (D1, "entities_by_risk_band", {"band": "high", "entity_type": "ip"}, 1),
                (D1, "entity_risk_histogram", {"bucket": "90-100"}, 2),
                (D1, "entity_risk_histogram", {"bucket": "00-09"}, 1),
                (D1, "entity_risk_histogram", {"bucket": "50-59"}, 1),
                (D1, "model_version_in_use", {"model_version": "3"}, 2),
                (D1, "model_version_in_use", {"model_version": "none"}, 1),
            ],
        ),
    )


# --- drift ------------------------------------------------------------------------------


def reference_frame(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, drift.REFERENCE)


def histogram(spark: SparkSession, rows: list[tuple[date, str, float, int]]) -> DataFrame:
    return spark.createDataFrame(rows, drift.HISTOGRAM)


def test_psi_known_answers_levels_and_empty_bins(spark: SparkSession) -> None:
    ref = "model_v1"
    reference = reference_frame(
        spark,
        [
            (D1, "a", ref, [1.0], [0.5, 0.5], 100),
            (D1, "b", ref, [0.0], [0.9, 0.1], 100),
            (D1, "c", ref, [1.0], [0.5, 0.5], 100),
            (D1, "d", ref, [1.0], [1.0, 0.0], 100),
        ],
    )
    current = histogram(
        spark,
        [
            (D1, "a", 1.0, 1),  # on the edge: bins are right-closed, so the lower bin
            (D1, "a", 2.0, 3),  # -> shares [0.25, 0.75]
            (D1, "b", 0.0, 9),
            (D1, "b", 1.0, 1),  # -> [0.9, 0.1], no drift
            (D1, "c", 0.5, 3),
            (D1, "c", 7.0, 7),  # -> [0.3, 0.7]
            (D1, "d", 0.0, 1),
            (D1, "d", 5.0, 1),  # -> [0.5, 0.5] against an empty reference bin
        ],
    )
    eps = drift.PSI_EPSILON

    def psi(actual: list[float], wanted: list[float]) -> float:
        return sum(
            (max(a, eps) - max(e, eps)) * math.log(max(a, eps) / max(e, eps))
            for a, e in zip(actual, wanted, strict=True)
        )

    assert psi([0.25, 0.75], [0.5, 0.5]) == pytest.approx(0.274653, abs=1e-6)
    cfg = MetricsSettings(psi_warning=0.1, psi_alert=0.25)
    check(
        drift.psi_rows(current, reference, cfg, "feature_psi", "feature"),
        expected(
            spark,
            [
                (D1, "feature_psi", {"feature": "a", "level": "alert", "reference": ref}, 0.274653),
                (D1, "feature_psi", {"feature": "b", "level": "ok", "reference": ref}, 0.0),
                (D1, "feature_psi", {"feature": "c", "level": "warning", "reference": ref}, psi([0.3, 0.7], [0.5, 0.5])),
                (D1, "feature_psi", {"feature": "d", "level": "alert", "reference": ref}, psi([0.5, 0.5], [1.0, 0.0])),
            ],
        ),
    )  # fmt: skip


VALUES = [0, 0, 0, 0, 1, 1, 2, 3, 5, 8]  # quartile edges 0, 1, 3; shares .4 .2 .2 .2


def test_trailing_reference_pools_the_window_like_the_training_reference(
    spark: SparkSession,
) -> None:
    before = [D1 - timedelta(days=2), D1 - timedelta(days=1)]  # Saturday, Sunday
    hist = histogram(
        spark,
        [
            (before[0], "f", 0.0, 3),
            (before[1], "f", 0.0, 1),
            (before[1], "f", 1.0, 2),
            (before[0], "f", 2.0, 1),
            (before[1], "f", 3.0, 1),
            (before[0], "f", 5.0, 1),
            (before[1], "f", 8.0, 1),
            (D1, "f", 99.0, 5),  # the date itself is never its own reference
            (D1 - timedelta(days=3), "f", 99.0, 5),  # outside the 2-day window
        ],
    )
    all_days = spark.createDataFrame(drift.trailing_windows([D1], 2, False), drift.WINDOWS)
    assertDataFrameEqual(
        drift.reference_from_history(hist, all_days, 4),
        reference_frame(
            spark, [(D1, "f", "trailing_2d", [0.0, 1.0, 3.0], [0.4, 0.2, 0.2, 0.2], 10)]
        ),
    )
    # the training reference bins its rows the same way
    logged = feature_reference(pd.DataFrame({"f": VALUES}), 4, D1, D1)["features"]["f"]
    assert logged == {"edges": [0.0, 1.0, 3.0], "shares": [0.4, 0.2, 0.2, 0.2]}
    # same day type: a Monday has no weekday in a window of the weekend before it
    same_type = spark.createDataFrame(drift.trailing_windows([D1], 2, True), drift.WINDOWS)
    assert drift.trailing_windows([D1], 2, True)[0][3:] == ("trailing_2d_weekday", "weekday")
    assert drift.reference_from_history(hist, same_type, 4).count() == 0


def test_drift_rows_name_their_reference_or_none(spark: SparkSession) -> None:
    reference = reference_frame(spark, [(D1, "f", "trailing_2d", [1.0], [0.5, 0.5], 10)])
    current = histogram(spark, [(D1, "f", 0.0, 1), (D1, "f", 2.0, 1), (D2, "f", 0.0, 4)])
    check(
        drift.drift_metrics(current, reference, days(spark, D1, D2), MetricsSettings(), "baseline_statistic"),
        expected(
            spark,
            [
                (D1, "baseline_psi", {"level": "ok", "reference": "trailing_2d", "statistic": "f"}, 0.0),
                (D1, "drift_reference", {"family": "baseline_statistic", "reference": "trailing_2d"}, 10),
                (D2, "drift_reference", {"family": "baseline_statistic", "reference": "none"}, 0),
            ],
        ),
    )  # fmt: skip


def test_logged_reference_uses_the_day_type_when_training_logged_it(spark: SparkSession) -> None:
    x = pd.DataFrame({"log_events": [0.0, 1.0, 2.0, 3.0], "kind_dns": [0.0, 0.0, 1.0, 1.0]})
    weekend = np.array([False, False, True, True])
    logged = feature_reference(x, 2, D1, D2, weekend=weekend)
    assert logged["day_types"]["weekend"]["rows"] == 2
    assert logged["day_types"]["weekday"]["features"]["log_events"] == {
        "edges": [0.0],
        "shares": [0.5, 0.5],
    }
    saturday = D1 + timedelta(days=5)
    frame = drift.logged_reference(spark, [D1, saturday], "4", logged, same_day_type=True)
    assertDataFrameEqual(
        frame,
        reference_frame(
            spark,
            [
                (D1, "kind_dns", "model_v4_weekday", [0.0], [1.0, 0.0], 2),
                (D1, "log_events", "model_v4_weekday", [0.0], [0.5, 0.5], 2),
                (saturday, "kind_dns", "model_v4_weekend", [1.0], [1.0, 0.0], 2),
                (saturday, "log_events", "model_v4_weekend", [2.0], [0.5, 0.5], 2),
            ],
        ),
    )
    every_day = drift.logged_reference(spark, [D1], "4", logged, same_day_type=False)
    assert {r["reference"] for r in every_day.collect()} == {"model_v4"}


# --- alerts -------------------------------------------------------------------------------


def test_alerts_are_derived_from_drift_gaps_and_failed_gates(spark: SparkSession) -> None:
    base = expected(
        spark,
        [
            (D1, "feature_psi", {"feature": "log_events", "level": "alert", "reference": "model_v1"}, 0.4),
            (D1, "feature_psi", {"feature": "kind_dns", "level": "warning", "reference": "model_v1"}, 0.2),
            (D1, "baseline_psi", {"statistic": "events_mad", "level": "alert", "reference": "trailing_14d"}, 0.3),
            (D1, "telemetry_gap", {"source": "windows", "status": "missing"}, 1),
            (D1, "dq_gate_failed", {"source": "windows"}, 2),
            (D1, "dq_gate_failed", {"source": "idp"}, 0),
            (D2, "feature_psi", {"feature": "log_events", "level": "ok", "reference": "model_v1"}, 0.01),
            (D2, "source_status", {"source": "idp", "status": "ok"}, 1),
            (D2, "dq_gate_failed", {"source": "idp"}, 0),
        ],
    )  # fmt: skip
    check(
        families.alert_metrics(base, days(spark, D1, D2)),
        expected(
            spark,
            [
                (D1, "alert", {"condition": "drift", "family": "model_feature", "name": "log_events", "reference": "model_v1"}, 0.4),
                (D1, "alert", {"condition": "drift", "family": "baseline_statistic", "name": "events_mad", "reference": "trailing_14d"}, 0.3),
                (D1, "alert", {"condition": "source_gap", "source": "windows", "status": "missing"}, 1),
                (D1, "alert", {"condition": "dq_gate_failed", "source": "windows"}, 2),
                (D1, "alerts_total", {}, 4),
                (D2, "alerts_total", {}, 0),
            ],
        ),
    )  # fmt: skip


# --- the stage on a tiny lake ---------------------------------------------------------------

LAKE_DATES = [D1, D2, D3]


def _features(**values: float) -> dict[str, float]:
    return {name: float(values.get(name, 0.0)) for name in FEATURES}


def build_tiny_lake(spark: SparkSession, work: Path) -> RunContext:
    """Three days of every table the stage reads, a ground truth and the reference files."""
    ctx = RunContext(spark, test_settings(work))
    lake = ctx.lake
    sessions = []
    for day in [D1 - timedelta(days=1), *LAKE_DATES]:
        for j in range(6):
            sessions.append(
                (
                    day,
                    "auth" if j % 3 else "dns",
                    [5, 20, 85][j % 3] if day == D2 else 5,
                    None,
                    _features(
                        kind_auth=float(j % 3 != 0),
                        kind_dns=float(j % 3 == 0),
                        log_events=float(j),
                        failure_ratio=0.1 * j,
                    ),
                    "bob" if j == 2 else f"user{j}",
                    ts(day, 9 + j),
                )
            )
    lake.replace_dates(
        spark.createDataFrame(
            sessions,
            "run_date date, session_kind string, risk int, model_version string, "
            "features map<string,double>, entity_id string, session_start timestamp",
        ),
        "gold.session_scores",
        [D1 - timedelta(days=1), *LAKE_DATES],
    )
    lake.replace_dates(
        spark.createDataFrame(
            [(d, "user", "bob", 85 if d == D2 else 10) for d in LAKE_DATES]
            + [(d, "host", "dc1", 0) for d in LAKE_DATES],
            "run_date date, entity_type string, entity_id string, risk int",
        ),
        "gold.entity_risk",
        LAKE_DATES,
    )
    lake.replace_dates(
        spark.createDataFrame(
            [
                (D2, "block", "identity", "pending_approval"),
                (D3, "challenge", "identity", "approved"),
            ],
            "run_date date, action string, domain string, status string",
        ),
        "gold.policy_recommendations",
        LAKE_DATES,
    )
    lake.replace_dates(
        spark.createDataFrame(
            [
                (d, "bob", "block" if d == D2 else "allow", "enforce", "identity", "user", "{}")
                for d in LAKE_DATES
            ]
            + [
                (
                    d,
                    "carol",
                    "challenge" if d == D3 else "allow",
                    "enforce",
                    "identity",
                    "user",
                    "{}",
                )
                for d in LAKE_DATES
            ],
            LOG_DDL + ", domain string, target_type string, guardrails string",
        ),
        "gold.decision_log",
        LAKE_DATES,
    )
    lake.replace_dates(
        spark.createDataFrame(
            [decision("rb", D2, "approve", ts(D3, 7), "bob", "true_positive")], DECISIONS_DDL
        ),
        "ops.analyst_decisions",
        [D2],
    )
    lake.replace_dates(
        spark.createDataFrame(
            [(d, s, "missing" if (d, s) == (D3, "sshd") else "ok") for d in LAKE_DATES for s in ("idp", "sshd")],
            "run_date date, source string, status string",
        ),
        "ops.source_status",
        LAKE_DATES,
    )  # fmt: skip
    lake.replace_dates(
        spark.createDataFrame(
            [(d, "idp", "idp", "idp.expect_x", d != D2, True, None) for d in LAKE_DATES]
            + [(D1, "geolocation", "reference", "geo_database_current", False, False,
                '{"age_days": 3012, "build_date": "2018-07-03", "bundled": true, '
                '"database_type": "GeoLite2-City"}')],
            "run_date date, source string, suite string, expectation string, success boolean, "
            "critical boolean, details string",
        ),
        "ops.dq_results",
        LAKE_DATES,
    )  # fmt: skip
    lake.replace_dates(
        spark.createDataFrame(
            [
                (d, kind, f"{kind}{k}", False, *[float(k + n) for n in range(6)])
                for d in [D1 - timedelta(days=1), *LAKE_DATES]
                for kind in ("user", "host")
                for k in range(3)
            ],
            "run_date date, entity_type string, entity_id string, in_learning boolean, "
            + ", ".join(f"{s} double" for s in drift.BASELINE_STATISTICS),
        ),
        "gold.baselines",
        [D1 - timedelta(days=1), *LAKE_DATES],
    )
    lake.replace_dates(
        spark.createDataFrame(
            [(d, "dc1") for d in LAKE_DATES] + [(D1, "admin1")], "run_date date, entity_id string"
        ),
        "gold.entity_daily",
        LAKE_DATES,
    )
    (work / "ground_truth.jsonl").write_text(
        json.dumps(
            {
                "scenario": "brute_force",
                "entity_type": "user",
                "entity_id": "bob",
                "start": "2026-10-06T09:00:00Z",
                "end": "2026-10-06T10:00:00Z",
                "expected_signals": ["brute_force"],
            }
        )
        + "\n"
    )
    reference = work / "reference"
    reference.mkdir()
    (reference / "asset_inventory.csv").write_text(
        "asset_id,fqdn,ip,asset_type,os,criticality,tags,owner,site,timezone\n"
        "dc1,dc1.x,10.0.0.1,domain_controller,w,critical,,it,nyc,UTC\n"
        "ws-1,ws-1.x,10.0.0.9,workstation,w,low,,bob,nyc,UTC\n"
    )
    (reference / "identity_directory.csv").write_text(
        "user_id,display_name,upn,sam_account,email,aliases,department,role,peer_group,"
        "account_type,privileged,home_country,home_city,timezone,work_start_hour,"
        "work_end_hour,devices,manager,created\n"
        "admin1,A,a,a,a,,it,admin,it/admin,admin,true,US,NYC,UTC,8,17,,,2020-01-01\n"
        "bob,B,b,b,b,,it,dev,it/dev,human,false,US,NYC,UTC,8,17,,,2020-01-01\n"
    )
    return ctx


def snapshot(ctx: RunContext) -> DataFrame:
    rows = ctx.lake.read(METRICS_DAILY.name).collect()  # the metrics of three tiny days
    return ctx.spark.createDataFrame(rows, METRICS_DAILY.schema)


@pytest.fixture(scope="module")
def tiny_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ctx = build_tiny_lake(spark, tmp_path_factory.mktemp("metrics"))
    bulk = metrics_stage.run_metrics(ctx, LAKE_DATES)
    return {"ctx": ctx, "bulk": bulk, "rows": snapshot(ctx)}


def test_stage_writes_every_family_for_every_date(tiny_lake: dict[str, Any]) -> None:
    rows = tiny_lake["rows"]
    per_date = {
        (r["run_date"], r["metric"]) for r in rows.select("run_date", "metric").distinct().collect()
    }
    for day in LAKE_DATES:
        assert (D1, "geo_database_age_days") in per_date  # the reference row of D1
        for metric in ("recommendations_total", "alerts_total", "sessions_scored", "dq_pass_rate",
                       "source_status", "policy_coverage", "model_version_in_use", "drift_reference",
                       "detection_outcomes", "analyst_decisions_total"):  # fmt: skip
            assert (day, metric) in per_date, (day, metric)
    got = {
        (r["run_date"], r["metric"], tuple(sorted(r["dimensions"].items())), r["value"])
        for r in rows.where(
            F.col("metric").isin("alert", "detection_recall", "incidents", "policy_coverage")
        ).collect()
    }
    assert got == {
        # D2's critical idp check failed; sshd was missing on D3
        (D2, "alert", (("condition", "dq_gate_failed"), ("source", "idp")), 1.0),
        (
            D3,
            "alert",
            (("condition", "source_gap"), ("source", "sshd"), ("status", "missing")),
            1.0,
        ),
        # bob's incident (D2) was acted on: recall 1 from D2 on, against both label sources
        (D2, "detection_recall", (("labels", "ground_truth"), ("window_days", "30")), 1.0),
        (D3, "detection_recall", (("labels", "ground_truth"), ("window_days", "30")), 1.0),
        (D2, "detection_recall", (("labels", "analyst_verdicts"), ("window_days", "30")), 1.0),
        (D3, "detection_recall", (("labels", "analyst_verdicts"), ("window_days", "30")), 1.0),
        *[
            (d, "incidents", (("labels", lbl), ("state", state), ("window_days", "30")), n)
            for d in (D2, D3)
            for lbl in ("ground_truth", "analyst_verdicts")
            for state, n in (("detected", 1.0), ("undetected", 0.0))
        ],
        *[(d, "policy_coverage", (("population", "critical_assets"),), 1.0) for d in LAKE_DATES],
        (D1, "policy_coverage", (("population", "privileged_users"),), 1.0),
        (D2, "policy_coverage", (("population", "privileged_users"),), 0.0),
        (D3, "policy_coverage", (("population", "privileged_users"),), 0.0),
    }
    assert tiny_lake["bulk"].details["alerts"] == 2
    assert tiny_lake["bulk"].details["drift_reference"] == "trailing_14d"


def test_rerun_and_date_by_date_give_the_bulk_rows(tiny_lake: dict[str, Any]) -> None:
    ctx, bulk_rows = tiny_lake["ctx"], tiny_lake["rows"]
    metrics_stage.run_metrics(ctx, [D2])  # a re-run of one date: same rows, no duplicates
    check(snapshot(ctx), bulk_rows)
    for day in (D3, D1):  # every date on its own, out of order
        metrics_stage.run_metrics(ctx, [day])
    check(snapshot(ctx), bulk_rows)


def test_champion_reference_is_logged_by_training_and_used_for_drift(
    spark: SparkSession, tmp_path: Path
) -> None:
    from jobs.model.registry import load_feature_reference
    from jobs.model.train import run_train

    ctx = RunContext(spark, test_settings(tmp_path))
    rows = []
    for i in range(40):
        day = D1 if i < 30 else D1 + timedelta(days=5)  # Monday and a Saturday
        rows.append(
            (day, f"s{i:03d}", "auth", "user", f"u{i % 7}", f"u{i % 7}", "10.0.0.1",
             ts(day, 9), ts(day, 10), 0, _features(kind_auth=1.0, log_events=float(i % 10)))
        )  # fmt: skip
    frame = spark.createDataFrame(
        rows,
        "run_date date, session_id string, session_kind string, entity_type string, "
        "entity_id string, user_id string, src_ip string, session_start timestamp, "
        "session_end timestamp, risk int, features map<string,double>",
    ).withColumn("model_version", F.lit(None).cast("string"))
    ctx.lake.replace_dates(frame, "gold.session_scores", [D1, D1 + timedelta(days=5)])
    assert load_feature_reference(ctx.settings) is None  # no store yet, none created
    trained = run_train(ctx, D1, D1 + timedelta(days=5), estimator="isolation_forest")
    found = load_feature_reference(ctx.settings)
    assert found is not None and found[0] == trained.model_version == "1"
    reference = found[1]
    x = pd.DataFrame([r[-1] for r in rows])[list(FEATURES)]
    assert reference["features"] == feature_reference(x, 10, D1, D1)["features"]
    assert (reference["start"], reference["end"]) == (D1.isoformat(), "2026-10-10")
    assert reference["day_types"]["weekday"]["rows"] == 30
    assert reference["day_types"]["weekend"]["rows"] == 10

    result = metrics_stage.run_metrics(ctx, [D1])
    drift = ctx.lake.read(METRICS_DAILY.name).where(
        F.col("metric").isin("drift_reference", "feature_psi")
    )
    used = {(r["metric"], r["dimensions"].get("reference")) for r in drift.collect()}
    assert used == {
        ("drift_reference", "model_v1_weekday"),
        ("feature_psi", "model_v1_weekday"),
        ("drift_reference", "none"),
    }  # fmt: skip  (no baselines: no reference)
    assert result.details["drift_reference"] == "model_v1"


DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def test_bi_example_from_docs_runs_without_a_jvm(tiny_lake: dict[str, Any], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    text = DOCS.read_text(encoding="utf-8")
    block = text[text.index("<!-- bi-example -->") :]
    code = block[
        block.index("```python") + len("```python") : block.index(
            "```", block.index("```python") + 9
        )
    ]
    script = tmp_path / "bi.py"
    script.write_text(code)
    env = {
        **os.environ,
        "POLICYLAKE_LAKE": tiny_lake["ctx"].settings.paths.lake_root,
        "JAVA_HOME": "/nonexistent",  # no JVM needed
    }
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["action_rows"] == 2  # D2 block, D3 challenge
    assert ["ground_truth", "detection_recall", 1.0] in summary["quality"]
    assert summary["alerts"] == [
        ["2026-10-06", "dq_gate_failed", "idp"],
        ["2026-10-07", "source_gap", "sshd"],
    ]
