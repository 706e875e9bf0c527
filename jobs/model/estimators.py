"""The session risk model: feature list, estimator factory, pure train and evaluate.

Two families, one contract (a score in 0..1, higher = riskier):
- unsupervised: an IsolationForest per session kind (`KindwiseIsolationForest`); kinds
  behave so differently (a cloud principal-day is nothing like a sign-in session) that one
  forest over all of them would only learn that rare kinds are rare;
- supervised, when labels exist (analyst verdicts, or the generator's ground truth in the
  demo): gradient boosting or logistic regression over the same features.

No MLflow and no Spark session here (rule 7): `jobs.model.train` logs and registers, `jobs.stages.score.stage`
applies the champion with `mapInPandas`. `feature_columns` builds the feature map in Spark
so training and scoring read the very same values from `gold.session_scores.features`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "ESTIMATORS",
    "FEATURES",
    "KIND_FEATURES",
    "KindwiseIsolationForest",
    "RiskScorer",
    "evaluate",
    "evaluate_scores",
    "feature_columns",
    "feature_frame",
    "make_estimator",
    "risk_scores",
    "train",
]

KIND_FEATURES = (
    "kind_auth",
    "kind_auth_source",
    "kind_host",
    "kind_network",
    "kind_dns",
    "kind_cloud",
)
FEATURES: tuple[str, ...] = (
    *KIND_FEATURES,
    "log_events",  # log1p(events)
    "failure_ratio",  # failures / events
    "log_failures",
    "log_duration_min",  # log1p(minutes between first and last event)
    "log_targets",  # apps+hosts / accounts / pairs+users / host:ports / names / actions
    "log_privileged",  # privileged logons or actions
    "log_bytes_out",  # bytes sent to the internet
    "log_bytes_in",
    "external_source",  # from outside the organisation and not a known egress/VPN
    "log_iam_writes",
    "log_regions",
)
ESTIMATORS = ("isolation_forest", "gradient_boosting", "logistic_regression")


# --- features (Spark) ----------------------------------------------------------------------


def _num(df: DataFrame, name: str) -> Column:
    return F.coalesce(F.col(name).cast("double"), F.lit(0.0)) if name in df.columns else F.lit(0.0)


def feature_columns(view: DataFrame, kind: str) -> Column:
    """The `features` map (name -> double) of one view kind; absent measures are 0."""

    def n(name: str) -> Column:
        return _num(view, name)

    log1p = F.log1p
    events = F.greatest(n("event_count"), F.lit(1.0))
    seconds = (
        F.coalesce(
            F.col("session_end").cast("double") - F.col("session_start").cast("double"), F.lit(0.0)
        )
        if "session_start" in view.columns
        else F.lit(0.0)
    )
    targets = {
        "auth": n("app_count")
        + (F.coalesce(F.size("dst_hosts"), F.lit(0)) if "dst_hosts" in view.columns else F.lit(0)),
        "auth_source": n("accounts"),
        "host": n("process_pairs") + n("logon_users"),
        "network": n("dst_endpoints"),
        "dns": n("distinct_queries"),
        "cloud": n("distinct_actions"),
    }[kind]
    external = F.lit(0.0)
    if "src_is_internal" in view.columns:
        external = F.when(
            ~F.coalesce(F.col("src_is_internal"), F.lit(False))
            & ~F.coalesce(F.col("src_is_known_egress"), F.lit(False))
            & F.col("src_ip").isNotNull(),
            1.0,
        ).otherwise(0.0)
    values: dict[str, Column] = {
        f"kind_{k}": F.lit(1.0 if k == kind else 0.0) for k in (x[5:] for x in KIND_FEATURES)
    }
    values.update(
        {
            "log_events": log1p(n("event_count")),
            "failure_ratio": n("failure_count") / events,
            "log_failures": log1p(n("failure_count")),
            "log_duration_min": log1p(F.greatest(seconds, F.lit(0.0)) / 60.0),
            "log_targets": log1p(targets.cast("double")),
            "log_privileged": log1p(n("privileged_count")),
            "log_bytes_out": log1p(n("bytes_out_external")),
            "log_bytes_in": log1p(n("bytes_in")),
            "external_source": external,
            "log_iam_writes": log1p(n("iam_writes")),
            "log_regions": log1p(n("regions")),
        }
    )
    return F.create_map(
        *[x for name in FEATURES for x in (F.lit(name), values[name].cast("double"))]
    )


def feature_frame(features: pd.Series | list[dict[str, float]]) -> pd.DataFrame:
    """Rows of feature maps -> a float frame with exactly `FEATURES` as columns (missing: 0)."""
    rows = [dict(m) if m is not None else {} for m in features]
    frame = pd.DataFrame.from_records(rows, columns=list(FEATURES))
    return frame.astype("float64").fillna(0.0)


# --- estimators ----------------------------------------------------------------------------


class KindwiseIsolationForest(BaseEstimator):  # type: ignore[misc]
    """One IsolationForest per session kind; `predict` gives the anomaly score in 0..1.

    The score is the original paper's s(x) = 2^(-E[h(x)]/c(n)) (sklearn's `-score_samples`):
    about 0.5 for ordinary rows and towards 1 for rows isolated in few splits. Kinds with
    fewer than `min_rows` training rows share one forest fitted on every row.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        max_samples: int | float | str = "auto",
        max_features: float = 1.0,
        min_rows: int = 32,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.min_rows = min_rows
        self.random_state = random_state

    def _forest(self) -> IsolationForest:
        return IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            max_features=self.max_features,
            contamination="auto",
            random_state=self.random_state,
        )

    @staticmethod
    def _kinds(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.argmax(x[:, : len(KIND_FEATURES)], axis=1))

    def fit(self, x: Any, y: Any = None) -> KindwiseIsolationForest:
        arr = np.asarray(x, dtype="float64")
        kinds = self._kinds(arr)
        self.forests_: dict[int, IsolationForest] = {}
        for k in np.unique(kinds).tolist():
            rows = arr[kinds == k]
            if len(rows) >= self.min_rows:
                self.forests_[int(k)] = self._forest().fit(rows)
        self.fallback_ = self._forest().fit(arr)
        self.n_features_in_ = arr.shape[1]
        return self

    def predict(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype="float64")
        out = np.empty(len(arr), dtype="float64")
        if len(arr) == 0:
            return out
        kinds = self._kinds(arr)
        for k in np.unique(kinds).tolist():
            mask = kinds == k
            forest = self.forests_.get(int(k), self.fallback_)
            out[mask] = -forest.score_samples(arr[mask])
        return np.clip(out, 0.0, 1.0)


class RiskScorer(BaseEstimator):  # type: ignore[misc]
    """What the registry holds: a fitted model whose `predict` is the 0..1 risk score the
    model signature declares (P(malicious) for classifiers, s(x) for the forests), where a
    classifier's own `predict` gives class labels. MLflow's pyfunc `predict` calls it, so the
    registered model scores the same when served or evaluated outside policylake. Input: a
    frame with the `FEATURES` columns (any order, extra columns ignored) or their array."""

    def __init__(self, model: Any = None) -> None:
        self.model = model

    def fit(self, x: Any, y: Any = None) -> RiskScorer:
        self.model = train(self.model, _features(x), y)
        return self

    def predict(self, x: Any) -> np.ndarray:
        return risk_scores(self.model, _features(x))


def _features(x: Any) -> pd.DataFrame:
    if isinstance(x, pd.DataFrame):
        return x
    return pd.DataFrame(np.asarray(x, dtype="float64"), columns=list(FEATURES))


def make_estimator(name: str = "isolation_forest", random_state: int = 0, **params: Any) -> Any:
    """The unfitted estimator for `name` (one of `ESTIMATORS`), with `params` overrides."""
    if name == "isolation_forest":
        return KindwiseIsolationForest(random_state=random_state, **params)
    if name == "gradient_boosting":
        defaults: dict[str, Any] = {
            "max_iter": 200,
            "learning_rate": 0.1,
            "max_leaf_nodes": 15,
            "class_weight": "balanced",
        }
        return HistGradientBoostingClassifier(random_state=random_state, **{**defaults, **params})
    if name == "logistic_regression":
        defaults = {"C": 1.0, "class_weight": "balanced", "max_iter": 1000}
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(random_state=random_state, **{**defaults, **params}),
        )
    raise ValueError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")


def is_supervised(estimator: Any) -> bool:
    return hasattr(estimator, "predict_proba")


def train(estimator: Any, x: pd.DataFrame, y: np.ndarray | None = None) -> Any:
    """Fit `estimator` on the feature frame (labels only for supervised estimators)."""
    data = x[list(FEATURES)].to_numpy(dtype="float64")
    if is_supervised(estimator):
        if y is None:
            raise ValueError("a supervised estimator needs labels")
        return estimator.fit(data, np.asarray(y, dtype="int64"))
    return estimator.fit(data)


def risk_scores(model: Any, x: pd.DataFrame) -> np.ndarray:
    """The model's 0..1 score per row: P(malicious) for classifiers, s(x) for the forests."""
    data = x[list(FEATURES)].to_numpy(dtype="float64")
    if len(data) == 0:
        return np.empty(0, dtype="float64")
    if is_supervised(model):
        return np.asarray(model.predict_proba(data)[:, 1], dtype="float64")
    return np.asarray(model.predict(data), dtype="float64")


def evaluate(
    model: Any, x: pd.DataFrame, y: np.ndarray, threshold: float = 0.6
) -> dict[str, float]:
    """Held-out quality: average precision (the promotion metric), ROC-AUC, and precision and
    recall at `threshold` (the score where the model starts adding risk points)."""
    return evaluate_scores(risk_scores(model, x), y, threshold)


def evaluate_scores(scores: np.ndarray, y: np.ndarray, threshold: float = 0.6) -> dict[str, float]:
    """`evaluate` on scores already computed (what MLflow's evaluation of the gate gets)."""
    labels = np.asarray(y, dtype="int64")
    scores = np.asarray(scores, dtype="float64")
    metrics: dict[str, float] = {
        "rows": float(len(labels)),
        "positives": float(labels.sum()),
    }
    if len(np.unique(labels)) < 2:
        return metrics
    flagged = (scores >= threshold).astype("int64")
    metrics.update(
        {
            "average_precision": float(average_precision_score(labels, scores)),
            "roc_auc": float(roc_auc_score(labels, scores)),
            "precision_at_threshold": float(precision_score(labels, flagged, zero_division=0)),
            "recall_at_threshold": float(recall_score(labels, flagged, zero_division=0)),
        }
    )
    return metrics
