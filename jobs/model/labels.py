"""Labels for training: analyst verdicts, or a generator's ground truth, and the held-out split."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.policy.vocabulary import NEGATIVE_VERDICTS, POSITIVE_VERDICTS

# --- labels (pure) --------------------------------------------------------------------------


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The generator's ground_truth.jsonl: one injected scenario per line."""
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _ts(value: str) -> pd.Timestamp:
    return (
        pd.Timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")))
        .tz_convert("UTC")
        .tz_localize(None)
    )


def labels_from_ground_truth(sessions: pd.DataFrame, scenarios: list[dict[str, Any]]) -> np.ndarray:
    """1 for sessions of a scenario's entity overlapping its [start, end], else 0.

    An IP scenario also claims the sign-in sessions coming from that IP.
    """
    labels = np.zeros(len(sessions), dtype="float64")
    start = pd.to_datetime(sessions["session_start"])
    end = pd.to_datetime(sessions["session_end"])
    for sc in scenarios:
        s, e = _ts(sc["start"]), _ts(sc["end"])
        same = (sessions["entity_type"] == sc["entity_type"]) & (
            sessions["entity_id"] == sc["entity_id"]
        )
        if sc["entity_type"] == "ip":
            same |= sessions["src_ip"] == sc["entity_id"]
        elif sc["entity_type"] in ("user", "service_account"):
            same |= sessions["user_id"] == sc["entity_id"]
        overlap = (start <= e) & (end >= s)
        labels[(same & overlap).to_numpy()] = 1.0
    return labels


def labels_from_decisions(sessions: pd.DataFrame, decisions: pd.DataFrame) -> np.ndarray:
    """Analyst verdicts on (run_date, target) label that target's sessions that day; others NaN."""
    labels = np.full(len(sessions), np.nan)
    if decisions.empty:
        return labels
    verdict = decisions["verdict"].astype(str).str.lower()
    value = np.where(
        verdict.isin(POSITIVE_VERDICTS), 1.0, np.where(verdict.isin(NEGATIVE_VERDICTS), 0.0, np.nan)
    )
    d = decisions.assign(_label=value).dropna(subset=["_label"])
    d = d.groupby(["run_date", "target_id"], as_index=False)["_label"].max()
    keyed = sessions[["run_date", "entity_id", "user_id"]].reset_index(drop=True)
    for column in ("entity_id", "user_id"):
        merged = keyed.merge(
            d.rename(columns={"target_id": column}), on=["run_date", column], how="left"
        )["_label"].to_numpy()
        labels = np.where(np.isnan(labels), merged, np.fmax(labels, np.nan_to_num(merged, nan=-1)))
    labels[labels < 0] = np.nan
    return labels


def split_holdout(labels: np.ndarray, share: float = 0.3, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out rows: a stratified share of the labelled rows."""
    rng = np.random.default_rng(seed)
    holdout = np.zeros(len(labels), dtype=bool)
    for value in (0.0, 1.0):
        idx = np.flatnonzero(labels == value)
        if len(idx) == 0:
            continue
        take = max(1, round(len(idx) * share)) if len(idx) > 1 else 0
        holdout[rng.choice(idx, size=take, replace=False)] = True
    return holdout
