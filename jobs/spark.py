"""The one SparkSession factory: Delta, UTC, and every setting from `Settings.spark`."""

from __future__ import annotations

import os
import sys
import tempfile

from pyspark.sql import SparkSession

from jobs.config import Settings


def spark_conf(settings: Settings) -> dict[str, str]:
    """All Spark settings the jobs rely on; user `spark.conf` entries win."""
    s = settings.spark
    conf = {
        "spark.master": s.master,
        "spark.app.name": s.app_name,
        "spark.driver.memory": s.driver_memory,
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.default.parallelism": str(s.shuffle_partitions),
        "spark.ui.enabled": str(s.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        # Event times are UTC everywhere; the JVM default time zone must not leak in.
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.databricks.delta.merge.repartitionBeforeWrite.enabled": "true",
        "spark.databricks.delta.optimizeWrite.enabled": "true",
        "spark.sql.files.maxPartitionBytes": "64m",
        "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "policylake-warehouse"),
    }
    conf.update(s.conf)
    return conf


def build_spark(settings: Settings) -> SparkSession:
    """Create (or return the running) SparkSession with Delta configured.

    Python workers must run this environment's interpreter, or pandas UDFs fail with
    "No module named 'pandas'" when `python3` on PATH is another Python.
    """
    from delta import configure_spark_with_delta_pip

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(
        builder, extra_packages=list(settings.spark.packages)
    ).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
