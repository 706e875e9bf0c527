"""Fetch the jars of Spark's Maven packages once, at set-up: `python -m jobs.core.jars`.

Spark's own Ivy resolves Delta (and `spark.packages` of the settings, if given with
`--config`) through its cache; the jars are copied to `jobs.core.packages.jars_dir()` next to
a manifest, so
every later Spark start finds them locally (`jobs.core.spark.build_spark`). Re-running it
with the same packages does nothing. Exit code 0 when the jars are in place, 1 (with one
line on stderr) when they could not be fetched.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from jobs.core.config import load_settings
from jobs.core.packages import jars_dir, local_jars, spark_packages, write_manifest


def fetch(packages: Sequence[str], folder: Path) -> list[str]:
    """Resolve `packages` with Spark's Ivy (a throw-away local session) into `folder`."""
    from pyspark.sql import SparkSession

    found = local_jars(packages, folder)
    if found is not None:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("policylake-fetch-jars")
        .config("spark.jars.packages", ",".join(packages))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        # spark-submit adds the files Ivy resolved (in its cache) to `spark.jars`
        resolved = spark.sparkContext.getConf().get("spark.jars", "") or ""
    finally:
        spark.stop()
    fetched = [Path(unquote(urlparse(j).path)) for j in resolved.split(",") if j.strip()]
    if not fetched or not all(j.suffix == ".jar" and j.is_file() for j in fetched):
        raise RuntimeError(f"Ivy resolved no usable jar for {', '.join(packages)}: {resolved!r}")
    for old in folder.glob("*.jar"):
        old.unlink()
    for jar in fetched:
        shutil.copy2(jar, folder / jar.name)
    write_manifest(folder, packages, [folder / j.name for j in fetched])
    found = local_jars(packages, folder)
    assert found is not None
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the jars of Spark's Maven packages once.")
    parser.add_argument("--config", help="a policylake.yaml whose spark.packages to add")
    parser.add_argument("--dir", type=Path, default=None, help="target folder")
    args = parser.parse_args(argv)
    extra: tuple[str, ...] = ()
    if args.config:
        extra = load_settings(args.config).spark.packages
    packages = spark_packages(extra)
    folder = args.dir or jars_dir()
    try:
        jars = fetch(packages, folder)
    except Exception as exc:  # one line for set-up, whatever failed
        print(f"could not fetch {', '.join(packages)}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"{len(jars)} jar(s) for {', '.join(packages)} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
