"""The drift reference: quantile bins of the training rows' features, logged with every model
and compared with scored days by gold.metrics_daily (docs/metrics.md).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

REFERENCE_DECIMALS = 3


# --- drift reference (pure) ----------------------------------------------------------------


def _feature_bins(x: pd.DataFrame, bins: int) -> dict[str, dict[str, list[float]]]:
    features: dict[str, dict[str, list[float]]] = {}
    for name in x.columns:
        values = np.sort(np.round(x[name].to_numpy(dtype="float64"), REFERENCE_DECIMALS))
        n = len(values)
        if n == 0:
            continue
        # integer arithmetic: index of the first value with cumulative count >= k*n/bins
        positions = [(k * n + bins - 1) // bins - 1 for k in range(1, bins)]
        edges = np.unique(values[positions])
        counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
        features[str(name)] = {
            "edges": [float(e) for e in edges],
            "shares": [float(c) / n for c in counts],
        }
    return features


def feature_reference(
    x: pd.DataFrame, bins: int, start: date, end: date, weekend: np.ndarray | None = None
) -> dict[str, Any]:
    """Quantile bin edges and shares per feature of the training rows (the drift reference).

    Values are rounded to REFERENCE_DECIMALS (half to even); edge k of `bins` is the smallest
    value whose cumulative share reaches k/bins, duplicates dropped; bins are right-closed:
    (-inf, e1], (e1, e2], ..., (ek, inf). jobs/stages/metrics/drift.py bins the scored days the same way.
    `weekend` (a boolean per row) adds the weekday and weekend distributions separately.
    """
    out: dict[str, Any] = {
        "format": "policylake.feature_reference/v1",
        "bins": bins,
        "decimals": REFERENCE_DECIMALS,
        "rows": len(x),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "features": _feature_bins(x, bins),
    }
    if weekend is not None:
        out["day_types"] = {
            kind: {"rows": int(mask.sum()), "features": _feature_bins(x[mask], bins)}
            for kind, mask in (("weekday", ~weekend), ("weekend", weekend))
        }
    return out
