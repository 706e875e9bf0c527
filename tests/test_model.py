"""The risk model: features, estimator factory, pure train/evaluate, MLflow train and promotion."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.core.tables import SESSION_SCORES
from jobs.model import estimators
from jobs.stages.score import sessions as session_views
from tests.conftest import run_command, run_json_command, test_settings
from tests.scoring_frames import DAY, at, events_df, signin


def test_feature_map_of_an_auth_session(spark: SparkSession) -> None:
    rows = [
        signin("a@x", at(9), status="failure", app_name="slack"),
        signin("a@x", at(9, 1), app_name="slack"),
        signin("a@x", at(9, 3), app_name="zoom", is_privileged=True),
    ]
    auth = session_views.auth_sessions(session_views.sessionize(events_df(spark, rows), 30))
    features = auth.select(estimators.feature_columns(auth, "auth").alias("f")).first()[0]
    assert sorted(features) == sorted(estimators.FEATURES)  # a map: its key order is not a contract
    frame = estimators.feature_frame([features])
    expected = dict.fromkeys(estimators.FEATURES, 0.0)
    expected.update(
        kind_auth=1.0,
        log_events=np.log1p(3),
        failure_ratio=1 / 3,
        log_failures=np.log1p(1),
        log_duration_min=np.log1p(3),
        log_targets=np.log1p(2),
        log_privileged=np.log1p(1),
        external_source=1.0,
    )
    pd.testing.assert_frame_equal(frame, pd.DataFrame([expected]), check_exact=False)


def test_factory_returns_unfitted_estimators() -> None:
    from sklearn.base import clone
    from sklearn.utils.validation import check_is_fitted

    for name in estimators.ESTIMATORS:
        est = estimators.make_estimator(name, random_state=1)
        clone(est)  # a proper sklearn estimator
        with pytest.raises(Exception):  # noqa: B017 - NotFittedError or AttributeError
            check_is_fitted(est)
    with pytest.raises(ValueError, match="unknown estimator"):
        estimators.make_estimator("random_forest")


def _synthetic(n: int = 400, outliers: int = 20, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Sessions of two kinds around their usual values, plus outliers far from them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = "kind_auth" if i % 2 else "kind_network"
        rows.append({kind: 1.0, "log_events": rng.normal(2.0, 0.3), "failure_ratio": abs(rng.normal(0.02, 0.02)),
                     "log_bytes_out": rng.normal(12.0, 0.5) if kind == "kind_network" else 0.0})  # fmt: skip
    for i in range(outliers):
        kind = "kind_auth" if i % 2 else "kind_network"
        rows.append({kind: 1.0, "log_events": rng.normal(4.5, 0.3), "failure_ratio": rng.uniform(0.7, 1.0),
                     "log_bytes_out": rng.normal(19.0, 0.5) if kind == "kind_network" else 0.0,
                     "external_source": 1.0})  # fmt: skip
    frame = estimators.feature_frame(rows)
    labels = np.array([0] * n + [1] * outliers)
    return frame, labels


def test_kindwise_forest_scores_outliers_higher_within_each_kind() -> None:
    x, y = _synthetic()
    model = estimators.train(estimators.make_estimator("isolation_forest", min_rows=50), x[y == 0])
    assert set(model.forests_) == {
        estimators.KIND_FEATURES.index("kind_auth"),
        estimators.KIND_FEATURES.index("kind_network"),
    }
    scores = estimators.risk_scores(model, x)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[y == 1].min() > np.percentile(scores[y == 0], 99)
    metrics = estimators.evaluate(model, x, y)
    assert metrics["average_precision"] > 0.95 and metrics["roc_auc"] > 0.95
    assert set(metrics) == {"rows", "positives", "average_precision", "roc_auc",
                            "precision_at_threshold", "recall_at_threshold"}  # fmt: skip


def test_supervised_train_and_evaluate_are_pure() -> None:
    x, y = _synthetic(seed=1)
    est = estimators.make_estimator("gradient_boosting")
    model = estimators.train(est, x, y)
    assert model is est  # sklearn fits in place and returns the estimator
    again = estimators.train(estimators.make_estimator("gradient_boosting"), x, y)
    np.testing.assert_allclose(estimators.risk_scores(model, x), estimators.risk_scores(again, x))
    assert estimators.evaluate(model, x, y)["average_precision"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs labels"):
        estimators.train(estimators.make_estimator("logistic_regression"), x)


# --- MLflow: train, register, promote -------------------------------------------------------


def _session_scores(spark: SparkSession, x: pd.DataFrame, y: np.ndarray) -> DataFrame:
    rows = []
    for i, (features, label) in enumerate(zip(x.to_dict("records"), y, strict=True)):
        user = f"bad{i}@x" if label else f"user{i}@x"
        rows.append(
            (f"s{i:04d}", user, at(9), at(9, 30), {k: float(v) for k, v in features.items()})
        )
    df = spark.createDataFrame(
        rows,
        "session_id string, user_id string, session_start timestamp, session_end timestamp, features map<string,double>",
    )
    values = {
        "run_date": F.lit(DAY),
        "risk": F.lit(0),
        "session_kind": F.lit("auth"),
        "entity_type": F.lit("user"),
        "entity_id": F.col("user_id"),
    }
    return df.select(
        *[
            (values.get(f.name, F.col(f.name) if f.name in df.columns else F.lit(None)))
            .cast(f.dataType)
            .alias(f.name)
            for f in SESSION_SCORES.schema.fields
        ]
    )


@pytest.fixture(scope="module")
def trained_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from jobs.core.context import RunContext

    work = tmp_path_factory.mktemp("train")
    settings = test_settings(work)
    ctx = RunContext(spark=spark, settings=settings)
    x, y = _synthetic(n=300, outliers=30, seed=2)
    ctx.lake.replace_dates(_session_scores(spark, x, y), "gold.session_scores", [DAY])
    truth = work / "ground_truth.jsonl"
    truth.write_text(
        "".join(
            json.dumps(
                {
                    "scenario": "test",
                    "entity_type": "user",
                    "entity_id": f"bad{i}@x",
                    "start": "2026-10-20T08:00:00Z",
                    "end": "2026-10-20T10:00:00Z",
                    "expected_signals": [],
                }
            )
            + "\n"
            for i in np.flatnonzero(y).tolist()
        )
    )
    return {"ctx": ctx, "truth": truth, "x": x, "y": y, "settings": settings}


KEY = b"k" * 32  # the audit key training signs model digests with


def test_train_registers_and_only_a_better_model_takes_the_champion_alias(
    trained_lake: dict[str, Any],
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from jobs.model.registry import Champion, load_champion, sign_digest, tracking_uri
    from jobs.model.train import run_train

    ctx, truth, settings = trained_lake["ctx"], trained_lake["truth"], trained_lake["settings"]
    first = run_train(
        ctx, DAY, DAY, estimator="gradient_boosting", ground_truth=truth, signing_key=KEY
    )
    assert first.promoted and first.model_version == "1" and first.champion_version == "1"
    assert first.metrics["average_precision"] > 0.9 and first.label_source == "ground_truth"

    # a deliberately weak forest (one tree on two samples) must not take the alias
    worse = run_train(
        ctx,
        DAY,
        DAY,
        estimator="isolation_forest",
        ground_truth=truth,
        params={"n_estimators": 1, "max_samples": 2, "min_rows": 10_000},
        signing_key=KEY,
    )
    assert worse.model_version == "2"
    assert worse.metrics["average_precision"] < worse.champion_metrics["average_precision"]
    assert not worse.promoted and worse.champion_version == "1"

    client = MlflowClient(tracking_uri=tracking_uri(settings), registry_uri=tracking_uri(settings))
    assert (
        str(client.get_model_version_by_alias(settings.scoring.model_name, "champion").version)
        == "1"
    )
    run = client.get_run(first.run_id)
    assert run.data.params["estimator"] == "gradient_boosting"
    assert "holdout_average_precision" in run.data.metrics
    features = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="features.json")
        ).read_text()
    )
    assert features == {"features": list(estimators.FEATURES)}
    info = mlflow.models.get_model_info(f"models:/{settings.scoring.model_name}/1")
    assert [c.name for c in info.signature.inputs.inputs] == list(estimators.FEATURES)

    champion = load_champion(settings, KEY)
    assert isinstance(champion, Champion)
    assert (champion.version, champion.signed) == ("1", True)
    assert isinstance(champion.model, estimators.RiskScorer)
    tags = client.get_model_version(settings.scoring.model_name, "1").tags
    assert tags["model_sha256"] == champion.digest
    assert tags["model_sha256_hmac"] == sign_digest(
        KEY, settings.scoring.model_name, "1", champion.digest
    )


def test_training_logs_its_inputs_a_scoring_pyfunc_and_the_gates_two_evaluations(
    trained_lake: dict[str, Any],
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from jobs.model.registry import Champion, load_champion, tracking_uri

    settings, x = trained_lake["settings"], trained_lake["x"]
    name = settings.scoring.model_name
    uri = tracking_uri(settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # the registered model's pyfunc `predict` is the risk score its signature declares
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/1")  # a test may trust its own store
    got = np.asarray(pyfunc.predict(x), dtype="float64")
    assert got.ndim == 1 and not set(np.unique(got)) <= {0.0, 1.0}  # scores, not labels
    champion = load_champion(settings, KEY)
    assert isinstance(champion, Champion)
    np.testing.assert_allclose(got, estimators.risk_scores(champion.model, x), rtol=1e-12)
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert [(c.name, c.type.name) for c in info.signature.outputs.inputs] == [
        ("risk_score", "double")
    ]

    second = client.get_model_version(name, "2")
    run = client.get_run(second.run_id)
    inputs = {
        d.tags[0].value if d.tags else None: json.loads(d.dataset.source)
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training"}
    assert inputs["training"]["path"].endswith("/gold/session_scores")
    # the version the rows were read at (MLflow leaves version 0 out of the source)
    read_at = int(run.data.params["session_scores_version"])
    assert inputs["training"].get("delta_table_version", 0) == read_at

    # the promotion gate: candidate v2 and champion v1 evaluated on the same held-out rows
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    evaluated = {c.data.tags["policylake.role"]: c for c in children}
    assert set(evaluated) == {"candidate", "champion"}
    assert {c.data.tags["policylake.model_version"] for c in children} == {"1", "2"}
    assert len({c.data.params["holdout_sha256"] for c in children}) == 1
    assert evaluated["champion"].data.metrics["average_precision"] == pytest.approx(
        run.data.metrics["champion_holdout_average_precision"]
    )
    assert evaluated["candidate"].data.metrics["average_precision"] == pytest.approx(
        run.data.metrics["holdout_average_precision"]
    )
    digests = {c.inputs.dataset_inputs[0].dataset.digest for c in children}
    assert len(digests) == 1  # one dataset: the same rows


def test_champion_scores_sessions_distributed(
    spark: SparkSession, trained_lake: dict[str, Any]
) -> None:
    from jobs.model.registry import Champion, load_champion
    from jobs.stages.score.risk import apply_model

    ctx, x = trained_lake["ctx"], trained_lake["x"]
    champion = load_champion(trained_lake["settings"], KEY)
    assert isinstance(champion, Champion)
    sessions = ctx.lake.read("gold.session_scores").select("session_id", "features")
    scored = apply_model(sessions, champion.model, champion.version).orderBy("session_id")
    got = np.array([r[0] for r in scored.select("model_score").collect()])
    np.testing.assert_allclose(got, estimators.risk_scores(champion.model, x), rtol=1e-9)
    assert {r[0] for r in scored.select("model_version").distinct().collect()} == {"1"}


def test_the_alias_is_resolved_once_and_that_version_loaded(
    trained_lake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from jobs.model import registry

    settings = trained_lake["settings"]
    name = settings.scoring.model_name
    uri = registry.tracking_uri(settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    real = registry.load_version

    def alias_moves_meanwhile(c: Any, version: Any, key: bytes | None) -> Any:
        client.set_registered_model_alias(name, "champion", "2")
        return real(c, version, key)

    monkeypatch.setattr(registry, "load_version", alias_moves_meanwhile)
    try:
        champion = registry.load_champion(settings, KEY)
    finally:
        client.set_registered_model_alias(name, "champion", "1")
    assert isinstance(champion, registry.Champion)
    assert champion.version == "1"
    assert champion.digest == client.get_model_version(name, "1").tags["model_sha256"]
    assert hasattr(champion.model.model, "predict_proba")  # v1's gradient boosting, not v2


def test_train_json_gives_the_registered_version_and_its_metrics(
    trained_lake: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --json` (issue 26) on a copy of the lake (its own MLflow store): the version
    registered, its held-out metrics as MLflow logged them, the promotion; an error keeps
    its exit code and line."""
    from mlflow import MlflowClient

    from jobs.model.registry import tracking_uri

    shutil.copytree(Path(trained_lake["settings"].paths.lake_root), tmp_path / "lake")
    args = ["train", "--date", DAY.isoformat(), "--days", "1", "--workdir", str(tmp_path)]
    args += ["--ground-truth", str(trained_lake["truth"])]
    code, doc, err = run_json_command(capsys, *args, "--estimator", "random_forest")
    assert code == 1 and doc["error"] == err.strip().removeprefix("error: ")
    assert "unknown estimator 'random_forest'" in doc["error"]

    code, out, err = run_command(capsys, *args, "--estimator", "gradient_boosting", "--json")
    doc = json.loads(out)
    assert code == 0 and (doc["schema"], doc["ok"]) == ("policylake.cli/train/v1", True)
    assert (doc["first_date"], doc["last_date"]) == (DAY.isoformat(), DAY.isoformat())
    settings = test_settings(tmp_path)
    uri = tracking_uri(settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(settings.scoring.model_name, "champion")
    assert (doc["model_version"], doc["promoted"], doc["champion_version"]) == (
        str(champion.version),
        True,
        str(champion.version),
    )
    assert champion.run_id == doc["run_id"]
    logged = client.get_run(doc["run_id"]).data
    assert (doc["estimator"], doc["label_source"]) == (
        logged.params["estimator"],
        logged.params["label_source"],
    )
    assert doc["metrics"]["average_precision"] == pytest.approx(
        logged.metrics["holdout_average_precision"]
    )
    assert f"trained gradient_boosting v{doc['model_version']}" in err


def test_no_store_means_no_champion(tmp_path: Path) -> None:
    from jobs.model.registry import NoChampion, load_champion

    settings = test_settings(tmp_path)
    assert isinstance(load_champion(settings), NoChampion)
    assert not (tmp_path / "mlruns").exists()  # scoring never creates a store


def test_an_unreachable_registry_is_an_error_not_no_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.model.registry import RegistryUnavailableError, load_champion

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = test_settings(tmp_path, paths={"mlflow_uri": "http://127.0.0.1:9"})
    with pytest.raises(RegistryUnavailableError, match=r"model registry http://127.0.0.1:9: "):
        load_champion(settings)


# --- a champion that is not what training registered (finding 7 of issue 24) ----------------


class CodeOnUnpickle:
    """A planted model: unpickling it runs code (here: creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


class CodeOnSetState:
    """A planted skops model: building it runs `__setstate__` (here: creates a marker file)."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def _store(tmp_path: Path) -> tuple[Any, Any]:
    from jobs.model.registry import ensure_experiment, mlflow_client

    settings = test_settings(tmp_path)
    client = mlflow_client(settings, create=True)
    return settings, (client, ensure_experiment(client, settings))


def _register(settings: Any, store: Any, model: Any, champion: bool = True, **log: Any) -> str:
    """Register `model` as the next version with MLflow itself (as an attacker with write access
    to the store could), without what `policylake train` records; optionally the champion."""
    import mlflow
    import mlflow.sklearn

    client, experiment = store
    name = settings.scoring.model_name
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name, **log)
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "features", json.dumps(list(estimators.FEATURES)))
    if champion:
        client.set_registered_model_alias(name, "champion", version)
    return version


def _record(settings: Any, store: Any, version: str, key: bytes | None = None) -> str:
    """What `policylake train` records on a version it registered: digest (and signature)."""
    import mlflow

    from jobs.model.registry import model_digest, sign_digest

    client, _ = store
    name = settings.scoring.model_name
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    digest = model_digest(folder / "model.skops")
    client.set_model_version_tag(name, version, "model_sha256", digest)
    if key is not None:
        client.set_model_version_tag(
            name, version, "model_sha256_hmac", sign_digest(key, name, version, digest)
        )
    return digest


def _fitted_scorer(seed: int) -> Any:
    x, y = _synthetic(n=120, outliers=12, seed=seed)
    return estimators.RiskScorer(
        estimators.train(estimators.make_estimator("gradient_boosting"), x, y)
    )


def test_a_pickled_champion_is_never_unpickled(tmp_path: Path) -> None:
    from jobs.model.registry import UntrustedModelError, load_champion

    settings, store = _store(tmp_path)
    marker = tmp_path / "code-ran"
    _register(settings, store, CodeOnUnpickle(marker), serialization_format="pickle")
    marker.unlink(missing_ok=True)  # MLflow loaded it back while saving
    with pytest.raises(
        UntrustedModelError, match=r"v1: stored as pickle .*policylake loads only skops"
    ):
        load_champion(settings)
    assert not marker.exists()  # no code from the store ran


def test_types_the_store_declares_trusted_are_not_trusted(tmp_path: Path) -> None:
    from jobs.model.registry import UntrustedModelError, load_champion

    settings, store = _store(tmp_path)
    marker = tmp_path / "code-ran"
    planted = f"{__name__}.CodeOnSetState"
    # the model's own MLmodel lists its type as trusted (MLflow loads with that list)
    version = _register(settings, store, CodeOnSetState(str(marker)), skops_trusted_types=[planted])
    _record(settings, store, version)  # without the audit key, anyone can record a digest
    marker.unlink(missing_ok=True)  # MLflow test-loaded it while saving
    with pytest.raises(UntrustedModelError, match=f"types outside the trusted list: {planted}"):
        load_champion(settings)
    assert not marker.exists()


def test_a_model_file_changed_after_registration_is_refused(tmp_path: Path) -> None:
    import mlflow

    from jobs.model.registry import TRUSTED_TYPES, Champion, UntrustedModelError, load_champion

    settings, store = _store(tmp_path)
    name = settings.scoring.model_name
    version = _register(settings, store, _fitted_scorer(1), skops_trusted_types=TRUSTED_TYPES)
    with pytest.raises(UntrustedModelError, match="no recorded digest"):
        load_champion(settings)  # registered outside `policylake train`
    _record(settings, store, version)
    champion = load_champion(settings)
    assert isinstance(champion, Champion) and not champion.signed
    # swap the stored file for another (valid, trusted) model
    client, _ = store
    stored = Path(client.get_model_version_download_uri(name, version).removeprefix("file://"))
    other = _register(
        settings, store, _fitted_scorer(2), champion=False, skops_trusted_types=TRUSTED_TYPES
    )
    other_file = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{other}"))
    (stored / "model.skops").write_bytes((other_file / "model.skops").read_bytes())
    with pytest.raises(UntrustedModelError, match="the file changed since it was registered"):
        load_champion(settings)


def test_with_the_audit_key_only_versions_signed_with_it_load(tmp_path: Path) -> None:
    from jobs.model.registry import TRUSTED_TYPES, Champion, UntrustedModelError, load_champion

    settings, store = _store(tmp_path)
    version = _register(settings, store, _fitted_scorer(3), skops_trusted_types=TRUSTED_TYPES)
    _record(settings, store, version)  # a digest, but no signature (the store's writer has no key)
    with pytest.raises(UntrustedModelError, match=r"not signed .* although POLICYLAKE_AUDIT_KEY"):
        load_champion(settings, KEY)
    _record(settings, store, version, key=b"another key of thirty-two bytes!")
    with pytest.raises(UntrustedModelError, match="does not check with POLICYLAKE_AUDIT_KEY"):
        load_champion(settings, KEY)
    _record(settings, store, version, key=KEY)
    champion = load_champion(settings, KEY)
    assert isinstance(champion, Champion) and champion.signed


def test_labels_from_ground_truth_and_decisions() -> None:
    from jobs.model.labels import labels_from_decisions, labels_from_ground_truth

    sessions = pd.DataFrame(
        {
            "run_date": [date(2026, 10, 20)] * 4,
            "entity_type": ["user", "user", "ip", "host"],
            "entity_id": ["a@x", "b@x", "9.9.9.9", "ws-1"],
            "user_id": ["a@x", "b@x", None, None],
            "src_ip": ["1.1.1.1", "9.9.9.9", "9.9.9.9", None],
            "session_start": pd.to_datetime(
                ["2026-10-20 09:00", "2026-10-20 12:00", "2026-10-20 12:00", "2026-10-20 00:00"]
            ),
            "session_end": pd.to_datetime(
                ["2026-10-20 09:30", "2026-10-20 12:05", "2026-10-20 12:30", "2026-10-20 23:00"]
            ),
        }
    )
    truth = [
        {
            "entity_type": "user",
            "entity_id": "a@x",
            "start": "2026-10-20T09:10:00Z",
            "end": "2026-10-20T09:12:00Z",
        },
        {
            "entity_type": "ip",
            "entity_id": "9.9.9.9",
            "start": "2026-10-20T12:01:00Z",
            "end": "2026-10-20T12:20:00Z",
        },
        {
            "entity_type": "host",
            "entity_id": "ws-1",
            "start": "2026-10-21T01:00:00Z",
            "end": "2026-10-21T02:00:00Z",
        },
    ]
    np.testing.assert_array_equal(labels_from_ground_truth(sessions, truth), [1, 1, 1, 0])
    decisions = pd.DataFrame(
        {
            "run_date": [date(2026, 10, 20)] * 2,
            "target_id": ["b@x", "ws-1"],
            "verdict": ["true_positive", "false_positive"],
        }
    )
    np.testing.assert_array_equal(
        labels_from_decisions(sessions, decisions), [np.nan, 1, np.nan, 0]
    )
