"""The one SparkSession factory: Delta, UTC, and every setting from `Settings.spark`."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from typing import Any

from delta import configure_spark_with_delta_pip
from pyspark.sql import DataFrame, SparkSession

from jobs.core.config import Settings
from jobs.core.packages import local_jars, spark_packages

# Spark SQL settings for a small input (`spark.small_input_mb`): with rows counted in
# thousands, a query spends more time generating and compiling (Janino) code and re-planning
# adaptively than running; interpreted expressions evaluate the same expressions, so the
# results are the same. Larger inputs keep Spark's defaults, which pay off on real volumes.
SMALL_INPUT_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.adaptive.enabled": "false",
}


def fit_to_input(spark: SparkSession, settings: Settings, input_bytes: int | None) -> bool:
    """Switch the session to the small-input settings when `input_bytes` (the raw input of
    the dates a run covers) is below `spark.small_input_mb`, back to the configured ones
    when it is not. An unknown size (None: no raw files for the dates) leaves the session as
    it is: a new session has the configured settings. Keys the user set in `spark.conf` are
    never switched. Returns whether the small-input settings apply."""
    if input_bytes is None:
        return False
    limit = settings.spark.small_input_mb * 1024 * 1024
    small = limit > 0 and input_bytes < limit
    configured = spark_conf(settings)
    for key, value in SMALL_INPUT_CONF.items():
        if key in settings.spark.conf:
            continue
        if small:
            spark.conf.set(key, value)
        elif key in configured:
            spark.conf.set(key, configured[key])
        else:
            spark.conf.unset(key)
    return small


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
        # shuffles sized from their input, not a fixed count (partitions of ~750 MB spilled
        # at 10 M events with 8; one night of a small organisation needs one or two)
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
        "spark.sql.adaptive.coalescePartitions.initialPartitionNum": str(
            max(s.max_shuffle_partitions, s.shuffle_partitions)
        ),
        "spark.sql.adaptive.advisoryPartitionSizeInBytes": f"{s.advisory_partition_mb}m",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.databricks.delta.merge.repartitionBeforeWrite.enabled": "true",
        "spark.databricks.delta.optimizeWrite.enabled": "true",
        "spark.sql.files.maxPartitionBytes": "64m",
        # Delta rebuilds a table's snapshot from its log with this many tasks (default 50):
        # on small tables and few cores the task overhead dominates every read and write.
        "spark.databricks.delta.snapshotPartitions": str(s.shuffle_partitions),
        "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "policylake-warehouse"),
        # Delta's VACUUM lists a table's folders in a job of this many tasks (Spark's default
        # 10,000 for parallel file listing): 20-36 s for each small table on 2 cores, 1.7 s
        # with 2. The shuffle partitions are sized for the volume; listing follows them.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(s.shuffle_partitions),
    }
    if not s.ui_enabled:
        # Nobody reads the UI's status store then, but Spark keeps filling it (1,000 SQL
        # executions, 100,000 tasks by default): in a long session (the demo, a backfill, the
        # test suite) their plans and metrics fill the driver heap. Keep a little.
        conf.update(
            {
                "spark.sql.ui.retainedExecutions": "20",
                "spark.ui.retainedJobs": "100",
                "spark.ui.retainedStages": "100",
                "spark.ui.retainedTasks": "2000",
                "spark.ui.dagGraph.retainedRootRDDs": "100",
                # unreferenced broadcasts, shuffles and cached blocks are cleaned at a GC
                "spark.cleaner.periodicGC.interval": "5min",
            }
        )
    # Delta caches one DeltaLog (with its snapshots' plans) per table path for the session
    # (10,000 by default); the pipeline has ~25 tables, so a small cache only evicts
    # tables a long session no longer uses.
    conf["spark.databricks.delta.delta.log.cacheSize"] = "100"
    conf.update(s.conf)
    return conf


# Set by spark-submit for its Python driver: master, memory and packages then come from the
# submit command (the Airflow Spark connection), and must not be overridden here.
SUBMITTED_ENV = "PYSPARK_GATEWAY_PORT"
_LAUNCH_ONLY = ("spark.master", "spark.driver.memory", "spark.driver.extraJavaOptions")


def build_spark(settings: Settings) -> SparkSession:
    """Create (or return the running) SparkSession with Delta configured.

    Python workers must run this environment's interpreter, or pandas UDFs fail with
    "No module named 'pandas'" when `python3` on PATH is another Python.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    submitted = SUBMITTED_ENV in os.environ
    if not submitted:
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    conf = spark_conf(settings)
    for key, value in conf.items():
        if submitted and key in _LAUNCH_ONLY:
            continue
        builder = builder.config(key, value)
    if submitted:
        spark = builder.getOrCreate()
    elif (jars := local_jars(spark_packages(settings.spark.packages))) is not None:
        # fetched at set-up (`python -m jobs.core.jars`): no Ivy resolution at run time
        own = [j for j in conf.get("spark.jars", "").split(",") if j.strip()]
        spark = builder.config("spark.jars", ",".join([*own, *jars])).getOrCreate()
    else:
        spark = configure_spark_with_delta_pip(
            builder, extra_packages=list(settings.spark.packages)
        ).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # Two warnings `checkpoint` and `release` cause by design: one when a local checkpoint is
    # unpersisted (it cannot be recomputed: `release` is called when it is no longer read), and
    # one when a checkpointed plan's output differs from its optimised plan's only in
    # nullability (Spark then keeps no column statistics for it; results are the same).
    jvm: Any = spark._jvm  # type: ignore[attr-defined]
    for logger in (
        "org.apache.spark.rdd.MapPartitionsRDD",
        "org.apache.spark.sql.execution.LogicalRDD",
    ):
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            logger, jvm.org.apache.logging.log4j.Level.ERROR
        )
    return spark


def checkpoint(df: DataFrame) -> DataFrame:
    """`df` computed now and kept on the executors (memory, spilling to disk) behind a one-node
    plan, for a frame that several queries read.

    A persisted frame is swapped for its cached data only after each query over it has been
    analysed with the frame's whole lineage; with wide lineages (a day's normalisation, the
    sessions and signals of scoring) that planning costs more than small data does. Unlike a
    persisted frame, a local checkpoint is not recomputed when an executor holding its blocks
    is lost: the stage fails, and the orchestrator's retry runs it again. Give the blocks back
    with `release` when done.
    """
    return df.localCheckpoint(eager=True)


def release(*frames: DataFrame) -> None:
    """Drop the blocks of frames made by `checkpoint` (their plan is the checkpointed RDD)."""
    for frame in frames:
        frame._jdf.queryExecution().logical().rdd().unpersist(False)  # type: ignore[operator]


class Checkpoints:
    """The frames one stage run checkpoints, released together when it ends (or fails).

    `with Checkpoints() as keep: frame = keep(df)`.
    """

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def __call__(self, df: DataFrame) -> DataFrame:
        self.frames.append(checkpoint(df))
        return self.frames[-1]

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        release(*self.frames)
        self.frames.clear()


def release_session_caches() -> None:
    """Drop the active session's cached frames and Delta's table cache, and collect Python
    garbage so dead DataFrames release their JVM plans (long sessions: tests, backfills)."""
    spark = SparkSession.getActiveSession()
    if spark is None:
        return
    spark.catalog.clearCache()
    jvm: Any = spark._jvm  # type: ignore[attr-defined]
    jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    gc.collect()
