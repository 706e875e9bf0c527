"""Where MLflow lives, and what scoring and metrics read from it: the champion and the
training feature distribution of a registered version.

A local `paths.mlflow_uri` folder becomes a SQLite tracking + registry store
(`<folder>/mlflow.db`, artifacts in `<folder>/artifacts`); MLflow 3's file store has no
model registry. A URI with a scheme (http://, sqlite://, databricks) is used as given.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jobs.core.config import Settings
from jobs.model import estimators as risk_model

log = logging.getLogger(__name__)
CHAMPION = "champion"
# Types skops may load from models this job logged itself (the store is ours, not a download).
TRUSTED_TYPES = [
    "jobs.model.estimators.KindwiseIsolationForest",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]
# The training feature distribution, logged with every run: the drift reference of
# gold.metrics_daily (docs/metrics.md). Values are binned at this many decimals.
FEATURE_REFERENCE_ARTIFACT = "feature_reference.json"


# --- where MLflow lives ---------------------------------------------------------------------


def _local_store(settings: Settings) -> Path | None:
    uri = settings.paths.mlflow_uri
    if "://" in uri or uri.startswith(("databricks", "file:")):
        return None
    return Path(uri).resolve()


def tracking_uri(settings: Settings) -> str:
    folder = _local_store(settings)
    if folder is None:
        return settings.paths.mlflow_uri
    return f"sqlite:///{folder / 'mlflow.db'}"


def mlflow_client(settings: Settings, create: bool) -> Any:
    import mlflow
    from mlflow import MlflowClient

    folder = _local_store(settings)
    if folder is not None and create:
        folder.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: Any, settings: Settings) -> str:
    name = settings.scoring.experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    folder = _local_store(settings)
    location = (folder / "artifacts").as_uri() if folder is not None else None
    return str(client.create_experiment(name, artifact_location=location))


def champion_version(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def load_champion(settings: Settings) -> tuple[Any, str] | None:
    """(model, version) of `<model_name>@champion`, or None when there is none (yet).

    Never creates a store: scoring before the first `train` must not leave one behind.
    """
    folder = _local_store(settings)
    if folder is not None and not (folder / "mlflow.db").is_file():
        return None
    import mlflow.sklearn

    client = mlflow_client(settings, create=False)
    name = settings.scoring.model_name
    version = champion_version(client, name)
    if version is None:
        return None
    features = (version.tags or {}).get("features")
    if features is not None and json.loads(features) != list(risk_model.FEATURES):
        log.warning(
            "champion %s v%s has another feature list; scoring without it", name, version.version
        )
        return None
    model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
    return model, str(version.version)


def load_feature_reference(
    settings: Settings, version: str | None = None
) -> tuple[str, dict[str, Any]] | None:
    """(version, training feature distribution) of a registered version, default the champion.

    None when there is no store, no such version, or the version was trained before the
    distribution was logged. Never creates a store.
    """
    folder = _local_store(settings)
    if folder is not None and not (folder / "mlflow.db").is_file():
        return None
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings, create=False)
    name = settings.scoring.model_name
    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else champion_version(client, name)
        )
        if found is None or not (found.tags or {}).get("feature_reference") or not found.run_id:
            return None
        data = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/{found.tags['feature_reference']}")
    except (MlflowException, OSError) as exc:
        log.warning("no feature reference for %s v%s: %s", name, version or CHAMPION, exc)
        return None
    return str(found.version), data
