"""A generated month through every stage up to `score`: the injected attacks are found, the
rest stays quiet.

Every scenario in ground_truth.jsonl must put its entity in the high band on its day with
one of its expected signals among the top reasons, and fewer than 1% of the benign
sessions (sessions of no scenario) may reach that band. Slow: generation plus ingest,
validate, normalize, baselines and score over 30 days.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pyspark.sql import functions as F

from tests.conftest import PipelineMonth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored_month(pipeline_month: PipelineMonth) -> dict[str, Any]:
    return {
        "ctx": pipeline_month.ctx,
        "truth": pipeline_month.truth,
        "result": pipeline_month.results["score"],
    }


def test_every_scenario_is_in_the_high_band_with_an_expected_reason(
    scored_month: dict[str, Any],
) -> None:
    ctx, truth = scored_month["ctx"], scored_month["truth"]
    cfg = ctx.settings.scoring
    assert len(truth) >= 8  # one of every kind at least
    risk = ctx.lake.read("gold.entity_risk")
    missed = []
    for sc in truth:
        day = date.fromisoformat(sc["start"][:10])
        row = (
            risk.where(
                (F.col("run_date") == F.lit(day))
                & (F.col("entity_type") == sc["entity_type"])
                & (F.col("entity_id") == sc["entity_id"])
            )
            .select("risk", "signals", "reasons")
            .first()
        )
        top = [s.name for s in row.signals[: cfg.top_reasons]] if row is not None else []
        if row is None or row.risk < cfg.band_high or not set(top) & set(sc["expected_signals"]):
            missed.append((sc["scenario"], sc["entity_id"], day, row.risk if row else None, top))
    assert missed == []


def test_fewer_than_one_percent_of_benign_sessions_are_high_risk(
    scored_month: dict[str, Any],
) -> None:
    from jobs.model.labels import labels_from_ground_truth

    ctx, truth = scored_month["ctx"], scored_month["truth"]
    cfg = ctx.settings.scoring
    sessions = (
        ctx.lake.read("gold.session_scores")
        .select(
            "entity_type", "entity_id", "user_id", "src_ip", "session_start", "session_end", "risk"
        )
        .toPandas()
    )
    benign = sessions[labels_from_ground_truth(sessions, truth) == 0]
    high = benign[benign["risk"] >= cfg.band_high]
    assert len(benign) > 1000
    assert len(high) / len(benign) < 0.01, high.head(20).to_string()
