"""The Maven packages Spark needs, from the installed distributions' metadata only (no
pyspark import: the Airflow DAG processor reads this when it parses the DAGs)."""

from __future__ import annotations

from importlib.metadata import version


def delta_maven_coordinate() -> str:
    """`io.delta:delta-spark_<spark minor>_2.13:<delta-spark>`, matching the installed
    pyspark and delta-spark (for `spark-submit --packages`)."""
    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"
