from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jobs.core.config import env_overrides, load_settings
from jobs.core.errors import ConfigError
from jobs.core.spark import spark_conf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_defaults_run_embedded() -> None:
    s = load_settings(None, environ={})
    assert s.spark.master == "local[*]"
    assert s.paths.lake_root == "lake"
    assert s.baselines.habit_window_days == 30


def test_yaml_file_and_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text(
        "spark:\n  master: local[2]\n  shuffle_partitions: 3\npaths:\n  lake_root: s3a://bucket/lake\n"
    )
    s = load_settings(cfg, environ={"POLICYLAKE__SPARK__SHUFFLE_PARTITIONS": "5"})
    assert s.spark.master == "local[2]"
    assert s.spark.shuffle_partitions == 5  # env wins over the file, parsed as int
    assert s.paths.lake_root == "s3a://bucket/lake"


def test_env_spark_conf_keeps_key_case() -> None:
    tree = env_overrides({"POLICYLAKE__SPARK__CONF__spark.hadoop.fs.s3a.endpoint": "http://x"})
    assert tree == {"spark": {"conf": {"spark.hadoop.fs.s3a.endpoint": "http://x"}}}


def test_unknown_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text("spark:\n  mastr: local[2]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'spark.mastr'"):
        load_settings(cfg, environ={})


def test_bad_value_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text("spark:\n  shuffle_partitions: zero\n")
    with pytest.raises(ConfigError, match=r"invalid value for 'spark.shuffle_partitions'"):
        load_settings(cfg, environ={})


def test_bad_env_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"environment.*'baselines.habit_window_days'"):
        load_settings(None, environ={"POLICYLAKE__BASELINES__HABIT_WINDOW_DAYS": "-3"})


def test_python_object_tags_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text("spark: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(cfg, environ={})


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(cfg, environ={})


def test_spark_conf_applies_settings_and_user_conf(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text(
        "spark:\n  master: spark://127.0.0.1:7077\n  driver_memory: 2g\n"
        "  conf:\n    spark.sql.shuffle.partitions: '64'\n"
    )
    conf = spark_conf(load_settings(cfg, environ={}))
    assert conf["spark.master"] == "spark://127.0.0.1:7077"
    assert conf["spark.driver.memory"] == "2g"
    assert conf["spark.sql.shuffle.partitions"] == "64"  # user conf wins
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert "DeltaSparkSessionExtension" in conf["spark.sql.extensions"]


def test_shuffles_are_sized_from_their_input(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text("spark:\n  max_shuffle_partitions: 400\n  advisory_partition_mb: 128\n")
    conf = spark_conf(load_settings(cfg, environ={}))
    assert conf["spark.sql.adaptive.enabled"] == "true"
    assert conf["spark.sql.adaptive.coalescePartitions.enabled"] == "true"
    # sized by the advisory size, not spread over as many tasks as there are cores
    assert conf["spark.sql.adaptive.coalescePartitions.parallelismFirst"] == "false"
    assert conf["spark.sql.adaptive.coalescePartitions.initialPartitionNum"] == "400"
    assert conf["spark.sql.adaptive.advisoryPartitionSizeInBytes"] == "128m"
    few = tmp_path / "few.yaml"
    few.write_text("spark:\n  shuffle_partitions: 16\n  max_shuffle_partitions: 4\n")
    # never fewer partitions to start from than the fixed count
    assert (
        spark_conf(load_settings(few, environ={}))[
            "spark.sql.adaptive.coalescePartitions.initialPartitionNum"
        ]
        == "16"
    )


def test_spark_conf_rejects_non_spark_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text("spark:\n  conf:\n    foo: bar\n")
    with pytest.raises(ConfigError, match=r"spark\.conf"):
        load_settings(cfg, environ={})


def test_with_workdir_roots_relative_paths(tmp_path: Path) -> None:
    s = load_settings(None, environ={"POLICYLAKE__PATHS__MLFLOW_URI": "http://mlflow:5000"})
    s = s.with_workdir(tmp_path)
    assert s.paths.lake_root == str(tmp_path.resolve() / "lake")
    assert s.paths.mlflow_uri == "http://mlflow:5000"


def test_example_file_is_valid_and_matches_defaults() -> None:
    from tests.conftest import REPO_ROOT

    example = load_settings(REPO_ROOT / "policylake.example.yaml", environ={})
    assert example == load_settings(None, environ={})


def test_example_file_documents_every_setting() -> None:
    """Every key of every section appears in the example file (new settings get documented)."""
    import yaml

    from tests.conftest import REPO_ROOT

    example = yaml.safe_load((REPO_ROOT / "policylake.example.yaml").read_text())
    defaults = load_settings(None, environ={}).model_dump()
    missing = [
        f"{section}.{key}"
        for section, values in defaults.items()
        if isinstance(values, dict)
        for key in values
        if key not in (example.get(section) or {})
    ]
    missing += [s for s in defaults if s not in example]
    assert missing == []


def _stored_rdds(spark: Any) -> set[int]:
    return {info.id() for info in spark.sparkContext._jsc.sc().getRDDStorageInfo()}


def test_checkpoints_are_one_node_plans_with_the_same_rows_released_on_exit(spark: Any) -> None:
    from pyspark.sql import functions as F
    from pyspark.testing import assertDataFrameEqual

    from jobs.core.spark import Checkpoints

    wide = spark.range(50).withColumn("k", F.col("id") % 7).groupBy("k").count().where("k > 1")
    before = _stored_rdds(spark)
    with pytest.raises(RuntimeError, match="stage failed"), Checkpoints() as keep:
        kept = keep(wide)
        assert kept._jdf.queryExecution().logical().nodeName() == "LogicalRDD"
        assert len(_stored_rdds(spark) - before) == 1  # computed now, held once
        assertDataFrameEqual(kept.join(kept, "k"), wide.join(wide, "k"))
        raise RuntimeError("stage failed")
    assert _stored_rdds(spark) == before  # released even when the stage fails
    with pytest.raises(Exception, match="unpersisted"):
        kept.count()  # its blocks are gone: nothing reads a released checkpoint by mistake


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        (  # GCS service-account private key
            "spark:\n  conf:\n    spark.hadoop.fs.gs.auth.service.account.private.key: x\n",
            "spark.conf.spark.hadoop.fs.gs.auth.service.account.private.key",
        ),
        (  # an Azure SAS key for one container
            "spark:\n  conf:\n    fs.azure.sas.logs.corp.blob.core.windows.net: sv=2024&sp=r\n",
            "spark.conf.fs.azure.sas.logs.corp.blob.core.windows.net",
        ),
        (  # an SSE-C / client-side encryption key for S3
            "spark:\n  conf:\n    spark.hadoop.fs.s3a.encryption.key: x\n",
            "spark.conf.spark.hadoop.fs.s3a.encryption.key",
        ),
        (  # a URI whose password contains '/'
            "paths:\n  mlflow_uri: https://bob:pa/ss+w0rd@mlflow.corp:5000\n",
            "paths.mlflow_uri",
        ),
        (  # a bearer token in a query string
            "paths:\n  mlflow_uri: https://mlflow.corp:5000/api?token=abc123\n",
            "paths.mlflow_uri",
        ),
        (  # ... in a spark.conf value as well
            "spark:\n  conf:\n    spark.hadoop.fs.defaultFS: abfss://c@a.dfs.core.windows.net/?sig=abc\n",
            "spark.conf.spark.hadoop.fs.defaultFS",
        ),
    ],
    ids=[
        "gcs-private-key",
        "azure-sas",
        "s3a-encryption-key",
        "uri-password-slash",
        "query-token",
        "conf-value-sas-signature",
    ],
)
def test_common_secrets_are_refused_as_credentials(
    tmp_path: Path, yaml_text: str, named: str
) -> None:
    """Issue 24, finding 8: each of these secrets is refused, by key, never echoing the value."""
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match="looks like a credential") as err:
        load_settings(cfg, environ={})
    assert f"'{named}'" in str(err.value)
    for secret in ("abc123", "pa/ss", "sv=2024", "sig=abc"):
        assert secret not in str(err.value)


def test_settings_that_name_a_mechanism_or_a_plain_uri_stay_allowed(tmp_path: Path) -> None:
    cfg = tmp_path / "policylake.yaml"
    cfg.write_text(
        "paths:\n  mlflow_uri: http://mlflow.corp:5000/\n  lake_root: s3a://bucket/lake\n"
        "spark:\n  conf:\n"
        "    spark.hadoop.fs.azure.sas.token.provider.type: org.example.SasTokenProvider\n"
        "    spark.hadoop.fs.s3a.encryption.algorithm: SSE-KMS\n"
    )
    settings = load_settings(cfg, environ={})
    assert settings.paths.mlflow_uri == "http://mlflow.corp:5000/"
    assert len(settings.spark.conf) == 2


def test_a_small_input_runs_interpreted_and_a_large_one_as_configured(
    spark: SparkSession, tmp_path: Path
) -> None:
    from jobs.core.spark import SMALL_INPUT_CONF, fit_to_input

    settings = load_settings(None, environ={})
    before = {k: spark.conf.get(k, None) for k in SMALL_INPUT_CONF}
    try:
        assert fit_to_input(spark, settings, 10 * 2**20)  # 10 MiB of raw files: small
        assert {k: spark.conf.get(k) for k in SMALL_INPUT_CONF} == SMALL_INPUT_CONF
        assert not fit_to_input(spark, settings, 2**30)  # 1 GiB: as configured
        assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
        assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"
        assert spark.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
        # size unknown (no raw files): not reported small, and the session is left alone
        assert not fit_to_input(spark, settings, None)
        assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
        fit_to_input(spark, settings, 10 * 2**20)
        assert not fit_to_input(spark, settings, None)
        assert spark.conf.get("spark.sql.adaptive.enabled") == "false"
        # a key the user set is theirs: never switched
        pinned = settings.model_copy(
            update={
                "spark": settings.spark.model_copy(
                    update={"conf": {"spark.sql.adaptive.enabled": "false"}}
                )
            }
        )
        spark.conf.set("spark.sql.adaptive.enabled", "false")
        assert not fit_to_input(spark, pinned, 2**30)
        assert spark.conf.get("spark.sql.adaptive.enabled") == "false"
        off = settings.model_copy(
            update={"spark": settings.spark.model_copy(update={"small_input_mb": 0})}
        )
        assert not fit_to_input(spark, off, 1)  # 0: never
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
