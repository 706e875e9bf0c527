"""Enforcement safety (issue 24): how many entities one run may block, evidence that fails
closed (no source status, a missing or changed model).

One small lake is recommended over three days with everyone at risk 100 (what a model that
scores everyone 1.0 does to entity risk), under guardrails with a tight blast-radius limit.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.core.config import SOURCES
from jobs.core.context import RunContext, StageResult
from jobs.core.tables import ENTITY_RISK, MODEL_EVIDENCE, SOURCE_STATUS
from jobs.stages.metrics.families import alert_metrics, blast_radius_metrics, dates_frame
from jobs.stages.recommend.inputs import degraded_from_status, model_degraded
from jobs.stages.recommend.stage import run_recommend
from jobs.stages.score.model_evidence import CHAMPION, ModelUse, evidence_rows
from tests.conftest import test_settings
from tests.test_recommend import POLICIES, risk_row, sig, write_reference

D1, D2, D3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
RECS, LOG = "gold.policy_recommendations", "gold.decision_log"
LIMIT = 4  # max_new per domain; max_share 0.5 is looser for every domain here
MODEL_WATCH = {
    "id": "model-watch",
    "version": "1.0.0",
    "owner": "soc@corp.example",
    "description": "Isolates hosts on overall risk alone (a tier that names no signal).",
    "domain": "endpoint",
    "mode": "enforce",
    "applies_to": ["host"],
    "tiers": [{"name": "very-high", "when": "risk >= 95", "action": "isolate", "valid_for_hours": 6}],
    "tests": [
        {"name": "very high risk isolates", "input": {"risk": 99}, "expect": "isolate"},
        {"name": "lower risk is allowed", "input": {"risk": 50}, "expect": "allow"},
    ],
}  # fmt: skip


def tight_policies(where: Path) -> Path:
    """The shipped policies with a blast-radius limit of LIMIT and a signal-less tier."""
    folder = where / "policies"
    shutil.copytree(POLICIES, folder)
    rules = yaml.safe_load((folder / "guardrails.yaml").read_text())
    rules["blast_radius"] = {"actions": ["isolate", "block"], "max_new": LIMIT, "max_share": 0.5}
    (folder / "guardrails.yaml").write_text(yaml.safe_dump(rules))
    (folder / "model-watch.yaml").write_text(yaml.safe_dump(MODEL_WATCH, sort_keys=False))
    return folder


def everyone_at_100(day: date) -> list[tuple[Any, ...]]:
    users = [
        risk_row(day, "user", f"user{i:02d}@corp.example", 100,
                 [sig("impossible_travel", "idp", 2000.0, 900.0)], "human", False)
        for i in range(30)
    ]  # fmt: skip
    hosts = [
        risk_row(day, "host", f"ws-nyc-{i:05d}", 100,
                 [sig("exfiltration_volume", "zeek_conn", 9e9, 1e9)], criticality="low")
        for i in range(12)
    ]  # fmt: skip
    ips = [
        risk_row(day, "ip", f"203.0.113.{i}", 100, [sig("password_spray", "idp", 200.0, 20.0)])
        for i in range(10)
    ]
    # evidence from the model alone: the model's pseudo-signal
    model_only = [
        risk_row(day, "host", f"app-nyc-{i:02d}", 99, [sig("model_score", "model", 1.0, 0.6)],
                 criticality="low")
        for i in range(3)
    ]  # fmt: skip
    return users + hosts + ips + model_only


@dataclass
class Flood:
    ctx: RunContext
    result: StageResult
    log: list[dict[str, Any]]
    recs: list[dict[str, Any]]


@pytest.fixture(scope="module")
def flood(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Flood:
    work = tmp_path_factory.mktemp("flood")
    ctx = RunContext(spark, test_settings(work))
    write_reference(ctx.settings)
    lake = ctx.lake
    status = [(d, s, "ok", []) for d in (D1, D2) for s in SOURCES]  # D3: no row at all
    lake.replace_dates(
        spark.createDataFrame(status, SOURCE_STATUS.schema), "ops.source_status", [D1, D2]
    )
    # D1: the first day the model scores (changed); D2: the same model (its evidence counts);
    # D3: a new champion (changed)
    first = evidence_rows(ModelUse("m", CHAMPION, "scored", "1", "sha256:aa", True), [D1, D2], None)
    runs = first + evidence_rows(
        ModelUse("m", CHAMPION, "scored", "2", "sha256:bb", True), [D3], first[-1]
    )
    lake.replace_dates(
        spark.createDataFrame(
            [tuple(r[c] for c in MODEL_EVIDENCE.column_names) for r in runs],
            MODEL_EVIDENCE.schema,
        ),
        MODEL_EVIDENCE,
        [D1, D2, D3],
    )
    rows = [r for d in (D1, D2, D3) for r in everyone_at_100(d)]
    lake.replace_dates(
        spark.createDataFrame(rows, ENTITY_RISK.schema), "gold.entity_risk", [D1, D2, D3]
    )
    result = run_recommend(ctx, [D1, D2, D3], policies_dir=tight_policies(work))
    log = [r.asDict() for r in lake.read(LOG).collect()]
    recs = [r.asDict() for r in lake.read(RECS).collect()]
    return Flood(ctx, result, log, recs)


def enforceable(rec: dict[str, Any]) -> str | None:
    """The action enforcement acts on (docs/policies.md, Consuming recommendations)."""
    if rec["status"] == "approved":
        return str(rec["action"])
    if rec["status"] == "overridden":
        return str(rec["override_action"])
    return None


def test_everyone_at_risk_100_blocks_no_more_than_the_limit(flood: Flood) -> None:
    """Issue 24, finding 3 (done-when): a model scoring everyone 1.0 cannot block thousands."""
    counts: dict[tuple[date, str], int] = {}
    for r in flood.recs:
        if enforceable(r) in ("isolate", "block"):
            key = (r["run_date"], r["domain"])
            counts[key] = counts.get(key, 0) + 1
    assert counts == {(D1, "identity"): LIMIT, (D1, "endpoint"): LIMIT, (D1, "network"): LIMIT,
                      (D2, "identity"): LIMIT, (D2, "endpoint"): LIMIT, (D2, "network"): LIMIT}  # fmt: skip
    held = [r for r in flood.log if "blast_radius" in json.loads(r["guardrails"])]
    assert held and all(r["status"] == "pending_approval" for r in held)
    assert all("blast-radius limit: at most 4 automatic" in r["reason"] for r in held)
    # the ones kept are the riskiest (all 100 here: then by target id, a stable order)
    kept = sorted(r["target_id"] for r in flood.recs
                  if r["run_date"] == D1 and r["domain"] == "identity" and enforceable(r))  # fmt: skip
    assert kept == [f"user{i:02d}@corp.example" for i in range(LIMIT)]
    assert flood.result.details["blast_radius_held"] == len(held)


def test_the_blast_radius_alert_fires_in_the_metrics(flood: Flood, spark: SparkSession) -> None:
    log = flood.ctx.lake.read(LOG).select(
        "run_date", "domain", "target_type", "target_id", "guardrails"
    )
    held = blast_radius_metrics(log)
    alerts = alert_metrics(held, dates_frame(spark, [D1, D2, D3]))
    rows = {
        (r["run_date"], r["dimensions"].get("domain")): r["value"]
        for r in alerts.where(F.col("metric") == "alert").collect()
    }
    # D1: 26 users, 8 + 0 hosts (the model's own are degraded), 6 IPs held; D3: nothing to hold
    assert rows == {(D1, "identity"): 26.0, (D1, "endpoint"): 8.0, (D1, "network"): 6.0,
                    (D2, "identity"): 26.0, (D2, "endpoint"): 11.0, (D2, "network"): 6.0}  # fmt: skip


def test_a_date_without_source_status_is_degraded_evidence(flood: Flood) -> None:
    """Issue 24, finding 3: no ops.source_status row means degraded (fail closed)."""
    d3 = [r for r in flood.log if r["run_date"] == D3]
    assert d3 and not [r for r in d3 if r["action"] in ("isolate", "block")]
    assert {json.dumps(json.loads(r["guardrails"])["applied"][-1]["guardrail"]) for r in d3
            if r["policy_action"] in ("isolate", "block")} == {'"degraded_evidence"'}  # fmt: skip
    days = {json.loads(r["inputs"])["day_degraded_sources"] == sorted([*SOURCES, "model"])
            for r in d3}  # fmt: skip
    assert days == {True}


def test_model_evidence_is_degraded_when_the_model_is_new_or_changed(flood: Flood) -> None:
    """Issue 24, finding 3: model-only evidence cannot isolate on the first day of a model or
    after it changed; the same model's evidence counts the next day."""
    watch = {
        r["run_date"]: r["action"]
        for r in flood.log
        if r["policy_id"] == "model-watch" and r["target_id"] == "app-nyc-00"
    }
    assert watch == {D1: "challenge", D2: "isolate", D3: "challenge"}


def test_degraded_inputs_are_decided_without_spark() -> None:
    assert degraded_from_status([D1], [], ("idp", "sshd")) == {"2026-10-01": ["idp", "sshd"]}
    rows = [(D1, "idp", "ok"), (D1, "sshd", "missing")]
    assert degraded_from_status([D1], rows, ("idp", "sshd", "windows")) == {
        "2026-10-01": ["sshd", "windows"]
    }

    def run(status: str, version: str | None) -> dict[str, Any]:
        return {"status": status, "model_version": version, "model_digest": None, "reason": "r"}

    runs = {D1: run("none", None), D2: run("champion", "3"), D3: run("none", None)}
    assert set(model_degraded([D1, D2, D3], runs)) == {"2026-10-02", "2026-10-03"}
    assert model_degraded([D1], {}) == {"2026-10-01": "no record of the model that scored "
                                        "2026-10-01 (ops.model_evidence)"}  # fmt: skip
    assert "refused" in model_degraded([D1], {D1: run("refused", "3")})["2026-10-01"]
    steady = {D1: run("champion", "3"), D2: run("champion", "3")}
    assert list(model_degraded([D2], steady)) == []
