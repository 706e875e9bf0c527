"""Delta's jars: fetched once at set-up, then found locally by every Spark start."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from jobs.core.packages import (
    delta_maven_coordinate,
    jars_dir,
    local_jars,
    spark_packages,
    write_manifest,
)


def _fetched(folder: Path, packages: list[str], names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jars = [folder / n for n in names]
    for jar in jars:
        jar.write_bytes(b"PK")
    write_manifest(folder, packages, jars)
    return jars


def test_a_manifest_for_exactly_the_packages_gives_its_jars(tmp_path: Path) -> None:
    packages = spark_packages(["org.apache.hadoop:hadoop-aws:3.4.2"])
    assert packages[0] == delta_maven_coordinate() and len(packages) == 2
    assert spark_packages([delta_maven_coordinate(), " "]) == [delta_maven_coordinate()]
    jars = _fetched(tmp_path, packages, ["b.jar", "a.jar"])
    assert local_jars(packages, tmp_path) == sorted(str(j) for j in jars)
    # other packages (an extra one added to the settings): resolve at run time instead
    assert local_jars(packages[:1], tmp_path) is None
    assert local_jars([*packages, "x:y:1"], tmp_path) is None
    # a jar gone missing, or no manifest at all: the same
    jars[0].unlink()
    assert local_jars(packages, tmp_path) is None
    assert local_jars(packages, tmp_path / "nowhere") is None
    (tmp_path / "manifest.json").write_text("{not json")
    assert local_jars(packages, tmp_path) is None


def test_the_folder_is_the_environments_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLICYLAKE_JARS_DIR", raising=False)
    assert jars_dir().parts[-3:] == ("share", "policylake", "jars")
    monkeypatch.setenv("POLICYLAKE_JARS_DIR", str(tmp_path))
    assert jars_dir() == tmp_path


def test_the_session_uses_the_fetched_jars_when_set_up_fetched_them(spark: Any) -> None:
    """After `make test`'s set-up the test session itself starts from the local jars: no Ivy."""
    found = local_jars(spark_packages())
    if found is None:
        pytest.skip("set-up has not fetched the jars into this environment")
    conf = spark.sparkContext.getConf()
    used = [urlparse(j).path for j in conf.get("spark.jars", "").split(",")]
    assert set(found) <= set(used)
    assert not conf.get("spark.jars.packages", "")
