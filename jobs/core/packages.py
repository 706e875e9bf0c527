"""The Maven packages Spark needs, and where set-up keeps their jars, from the installed
distributions' metadata and the file system only (no pyspark import: the Airflow DAG
processor reads this when it parses the DAGs).

Set-up (`scripts/setup.sh`, `python -m jobs.core.jars`) resolves Delta's jars once through
Spark's own Ivy into `<environment>/share/policylake/jars` (or `$POLICYLAKE_JARS_DIR`) and
writes a manifest of what it fetched. `jobs.core.spark.build_spark` then puts those files on
the class path (`spark.jars`): no Ivy resolution, no Ivy report and no network at run time.
Without a manifest for exactly the packages asked for, Spark resolves them as before
(`spark.jars.packages`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

JARS_DIR_ENV = "POLICYLAKE_JARS_DIR"
MANIFEST = "manifest.json"


def delta_maven_coordinate() -> str:
    """`io.delta:delta-spark_<spark minor>_2.13:<delta-spark>`, matching the installed
    pyspark and delta-spark (for `spark-submit --packages`)."""
    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def spark_packages(extra: Sequence[str] = ()) -> list[str]:
    """Delta's coordinate, then the extra ones (`spark.packages`), without repeats."""
    wanted = [delta_maven_coordinate(), *(p.strip() for p in extra)]
    return list(dict.fromkeys(p for p in wanted if p))


def jars_dir() -> Path:
    """Where set-up keeps the fetched jars: `$POLICYLAKE_JARS_DIR`, else inside the Python
    environment (so a new environment, with other versions, fetches its own)."""
    configured = os.environ.get(JARS_DIR_ENV, "").strip()
    return Path(configured) if configured else Path(sys.prefix) / "share" / "policylake" / "jars"


def local_jars(packages: Sequence[str], folder: Path | None = None) -> list[str] | None:
    """The jar files set-up fetched for exactly `packages` (every file present), else None."""
    manifest = (folder or jars_dir()) / MANIFEST
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("packages") != list(packages):
        return None
    jars = [str(manifest.parent / name) for name in recorded.get("jars", [])]
    if not jars or not all(Path(j).is_file() for j in jars):
        return None
    return jars


def write_manifest(folder: Path, packages: Sequence[str], jars: Sequence[Path]) -> Path:
    """Record which jars (files in `folder`) were fetched for `packages`."""
    manifest = folder / MANIFEST
    body = {"packages": list(packages), "jars": sorted(p.name for p in jars)}
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return manifest
