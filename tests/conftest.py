"""Shared fixtures: one session-scoped Spark (local[2], UI off, 2 shuffle partitions)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.config import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("POLICYLAKE_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def test_settings(workdir: Path, **sections: dict[str, object]) -> Settings:
    """Settings for a test: small local Spark, every path under `workdir`."""
    base = load_settings(None, environ={}).model_dump()
    base["spark"].update(master="local[2]", shuffle_partitions=2, driver_memory="2g")
    for name, values in sections.items():
        base[name].update(values)
    return Settings.model_validate(base).with_workdir(workdir)


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return test_settings(tmp_path_factory.mktemp("session"))


@pytest.fixture(scope="session")
def spark(spark_settings: Settings) -> Iterator[object]:
    from jobs.spark import build_spark

    session = build_spark(spark_settings)
    yield session
    session.stop()


@pytest.fixture()
def datasets() -> Path:
    """The real public recordings in ../shared/datasets; the test skips when absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (set POLICYLAKE_DATASETS)")
    return DATASETS
