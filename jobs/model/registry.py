"""Where MLflow lives, and what scoring and metrics read from it: the champion, loaded so that
nothing in the store can run code in the pipeline, and the training feature distribution of a
registered version.

A local `paths.mlflow_uri` folder becomes a SQLite tracking + registry store
(`<folder>/mlflow.db`, artifacts in `<folder>/artifacts`); MLflow 3's file store has no
model registry. A URI with a scheme (http://, sqlite://, databricks) is used as given.

Loading the champion (`load_champion`):

1. the alias `champion` is resolved once, to a version, and that version is loaded (so the
   version scored with is the version recorded, even if the alias moves meanwhile);
2. its artifacts are downloaded and read by this module, never by MLflow's loaders: the
   sklearn flavour must say `skops`, and `model.skops` is loaded with skops and the trusted
   types below (the types this job's own models are made of), not the list in the model's
   MLmodel file, which whoever writes the store controls. A pickle is never opened;
3. the file's sha256 must equal the digest `policylake train` recorded on the version (tag
   `model_sha256`), and, when POLICYLAKE_AUDIT_KEY is set, the HMAC of that digest made with
   the key (tag `model_sha256_hmac`) must check: whoever can write the store but has not got
   the key can neither swap the file nor move the alias to a version the pipeline did not
   train. Any of these failing is `UntrustedModelError` (exit 1): scoring stops.

A registry that cannot be reached is `RegistryUnavailableError`; the score stage decides
what that means (`scoring.registry_unavailable`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobs.core.config import Settings
from jobs.core.errors import PipelineError
from jobs.model import estimators as risk_model

log = logging.getLogger(__name__)
CHAMPION = "champion"
# The only types skops may build, beyond its own default list of safe numpy/scikit-learn
# types: what `jobs.model.estimators` fits. Never read from the model's own files.
TRUSTED_TYPES = [
    "jobs.model.estimators.KindwiseIsolationForest",
    "jobs.model.estimators.RiskScorer",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]
# The serialized model inside a registered version's artifacts (MLflow's sklearn flavour).
MODEL_FILE = "model.skops"
SKOPS = "skops"
# Version tags `policylake train` writes: the model file's sha256, and its HMAC.
DIGEST_TAG = "model_sha256"
SIGNATURE_TAG = "model_sha256_hmac"
# The training feature distribution, logged with every run: the drift reference of
# gold.metrics_daily (docs/metrics.md). Values are binned at this many decimals.
FEATURE_REFERENCE_ARTIFACT = "feature_reference.json"


class RegistryUnavailableError(PipelineError):
    """The model registry (or its artifact store) could not be reached or failed."""


class UntrustedModelError(PipelineError):
    """A registered model policylake will not load: not skops, a type outside the trusted
    list, or a file that is not the one training recorded (digest or signature)."""


@dataclass(frozen=True)
class Champion:
    """The model the score stage scores with, and what identifies it."""

    model: Any
    name: str
    version: str
    digest: str  # sha256 of the model file
    signed: bool  # the digest's HMAC was checked with the audit key
    model_id: str | None = None  # MLflow 3's logged model behind the version


@dataclass(frozen=True)
class NoChampion:
    """Why there is no model to score with (the registry answered)."""

    name: str
    reason: str
    incompatible: bool = False  # there is a champion, trained on another feature list


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


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """What a registry or artifact store that is down, unreachable or broken raises."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError, requests.RequestException, sqlalchemy.exc.SQLAlchemyError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def champion_version(client: Any, name: str) -> Any:
    """The model version the alias `champion` points at now (one lookup), or None when the
    model or the alias does not exist. Anything else the registry answers is
    `RegistryUnavailableError`."""
    try:
        registered = client.get_registered_model(name)
        version = (getattr(registered, "aliases", None) or {}).get(CHAMPION)
        if version is None:
            return None
        return client.get_model_version(name, str(version))
    except _unavailable_errors() as exc:
        if _not_found(exc):
            return None
        raise RegistryUnavailableError(
            f"model registry {client.tracking_uri}: {_first_line(exc)}"
        ) from exc


def model_digest(path: Path) -> str:
    """sha256 of a model file (what training records and loading checks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sign_digest(key: bytes, name: str, version: str, digest: str) -> str:
    """HMAC-SHA256 of (model name, version, file digest) with the audit key."""
    message = f"policylake-model/v1|{name}|{version}|{digest}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _skops_file(folder: Path, where: str) -> Path:
    """The model file of downloaded version artifacts, if its MLmodel says skops."""
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UntrustedModelError(
            f"{where}: no readable MLmodel file ({_first_line(exc)})"
        ) from exc
    flavor = (meta.get("flavors") or {}).get("sklearn") or {}
    fmt = flavor.get("serialization_format", "pickle")
    if fmt != SKOPS or flavor.get("pickled_model") != MODEL_FILE:
        raise UntrustedModelError(
            f"{where}: stored as {fmt} ({flavor.get('pickled_model')}), not {SKOPS} "
            f"({MODEL_FILE}); policylake loads only skops models, which cannot run code"
        )
    path = folder / MODEL_FILE
    if not path.is_file():
        raise UntrustedModelError(f"{where}: {MODEL_FILE} is missing")
    return path


def check_digest(
    tags: Mapping[str, str], name: str, version: str, digest: str, key: bytes | None
) -> bool:
    """Compare a model file's digest with what training recorded; True when the recorded
    HMAC was checked with `key`. Raises `UntrustedModelError` on any mismatch."""
    where = f"{name} v{version}"
    recorded = tags.get(DIGEST_TAG)
    if not recorded:
        raise UntrustedModelError(
            f"{where}: no recorded digest (tag {DIGEST_TAG}); register it with `policylake "
            "train`, which records one"
        )
    if not hmac.compare_digest(recorded, digest):
        raise UntrustedModelError(
            f"{where}: {MODEL_FILE} has sha256 {digest[:12]}.., training recorded "
            f"{recorded[:12]}..: the file changed since it was registered"
        )
    if key is None:
        return False
    signature = tags.get(SIGNATURE_TAG)
    if not signature:
        raise UntrustedModelError(
            f"{where}: not signed (tag {SIGNATURE_TAG}) although POLICYLAKE_AUDIT_KEY is set: "
            "it was not registered by `policylake train` with this key"
        )
    if not hmac.compare_digest(signature, sign_digest(key, name, version, digest)):
        raise UntrustedModelError(
            f"{where}: the signature of its digest does not check with POLICYLAKE_AUDIT_KEY "
            "(signed with another key, or the digest tag was changed)"
        )
    return True


def load_skops(path: Path, where: str) -> Any:
    """Load a skops file with `TRUSTED_TYPES` alone (skops refuses anything else)."""
    import skops.io

    try:
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
    except Exception as exc:  # a damaged archive: skops raises zip, json or key errors
        raise UntrustedModelError(f"{where}: unreadable skops file ({_first_line(exc)})") from exc
    if untrusted:
        raise UntrustedModelError(
            f"{where}: {MODEL_FILE} holds types outside the trusted list: "
            f"{', '.join(sorted(untrusted)[:5])}"
        )
    return skops.io.load(path, trusted=TRUSTED_TYPES)


def load_version(client: Any, version: Any, key: bytes | None) -> Champion:
    """Download one registered version's artifacts, check them, load the model."""
    import mlflow.artifacts

    name, number = str(version.name), str(version.version)
    where = f"{name} v{number}"
    with tempfile.TemporaryDirectory(prefix="policylake-model-") as tmp:
        try:
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{number}",
                    dst_path=tmp,
                    tracking_uri=client.tracking_uri,
                    registry_uri=client.tracking_uri,
                )
            )
        except _unavailable_errors() as exc:
            raise RegistryUnavailableError(
                f"{where}: its artifacts could not be read ({_first_line(exc)})"
            ) from exc
        path = _skops_file(folder, where)
        digest = model_digest(path)
        signed = check_digest(version.tags or {}, name, number, digest, key)
        model = load_skops(path, where)
    return Champion(model, name, number, digest, signed, getattr(version, "model_id", None))


def load_champion(settings: Settings, key: bytes | None = None) -> Champion | NoChampion:
    """The champion, checked and loaded (module docstring), or why there is none.

    Never creates a store: scoring before the first `train` must not leave one behind.
    """
    name = settings.scoring.model_name
    folder = _local_store(settings)
    if folder is not None and not (folder / "mlflow.db").is_file():
        return NoChampion(name, f"no MLflow store at {folder}: no model trained yet")
    client = mlflow_client(settings, create=False)
    version = champion_version(client, name)
    if version is None:
        return NoChampion(name, f"no version of {name} has the alias {CHAMPION} yet")
    return champion_of(client, version, key)


def champion_of(client: Any, version: Any, key: bytes | None) -> Champion | NoChampion:
    """A resolved champion version, loaded and checked; NoChampion when it was trained on
    another feature list (it could not score the features this code computes)."""
    name = str(version.name)
    features = (version.tags or {}).get("features")
    if features is not None and json.loads(features) != list(risk_model.FEATURES):
        log.warning(
            "champion %s v%s has another feature list; scoring without it", name, version.version
        )
        return NoChampion(
            name,
            f"{CHAMPION} {name} v{version.version} was trained on another feature list",
            incompatible=True,
        )
    return load_version(client, version, key)


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
    except RegistryUnavailableError as exc:
        log.warning("no feature reference for %s v%s: %s", name, version or CHAMPION, exc)
        return None
    except _unavailable_errors() as exc:
        log.warning("no feature reference for %s v%s: %s", name, version or CHAMPION, exc)
        return None
    return str(found.version), data
