"""One day of the pipeline on a real Spark standalone cluster equals the local-mode run.

A master and two workers start on loopback from the pyspark installation
(`tests/standalone.py`). `policylake run` then re-runs the last day of the shared generated
month against `spark://127.0.0.1:<port>`, on a copy of that month's lake, with the same
raw and reference files. Re-running a date is idempotent and every stage is deterministic,
so each table's rows for that day must equal what local mode wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from tests.conftest import REPO_ROOT, PipelineMonth, small_data_env
from tests.standalone import standalone_cluster

pytestmark = pytest.mark.slow

STAGES = "ingest,validate,normalize,baselines,score,recommend,export"
TABLES = (
    "bronze.idp",
    "bronze.windows",
    "bronze.zeek_conn",
    "bronze.zeek_dns",
    "bronze.cloudtrail",
    "bronze.sshd",
    "ops.ingest_log",
    "ops.dq_results",
    "ops.source_status",
    "ops.reconciliation",
    "silver.events",
    "silver.quarantine",
    "gold.entity_daily",
    "gold.baselines",
    "gold.session_scores",
    "gold.entity_risk",
    "gold.policy_recommendations",
    "gold.decision_log",
)


def _policylake() -> str:
    return str(Path(sys.executable).with_name("policylake"))


def test_one_day_on_a_standalone_cluster_equals_local_mode(
    pipeline_month: PipelineMonth, tmp_path: Path
) -> None:
    ctx, day = pipeline_month.ctx, pipeline_month.dates[-1]
    paths = ctx.settings.paths
    workdir = tmp_path / "cluster-run"
    workdir.mkdir()
    shutil.copytree(paths.lake_root, workdir / "lake")

    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYLAKE__")}
    env.update(
        {
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "POLICYLAKE__PATHS__RAW_ROOT": paths.raw_root,
            "POLICYLAKE__PATHS__REFERENCE_ROOT": paths.reference_root,
            "POLICYLAKE__SPARK__SHUFFLE_PARTITIONS": "2",
            "POLICYLAKE__SPARK__DRIVER_MEMORY": "1g",
            "POLICYLAKE__SPARK__CONF__spark.executor.memory": "900m",
            "POLICYLAKE__SPARK__CONF__spark.executor.cores": "1",
            "POLICYLAKE__SPARK__CONF__spark.driver.host": "127.0.0.1",
            **small_data_env(),
        }
    )
    with standalone_cluster(tmp_path / "cluster", workers=2, cores=1, memory="1g") as master:
        env["POLICYLAKE__SPARK__MASTER"] = master
        run = subprocess.run(
            [
                _policylake(),
                "run",
                "--workdir",
                str(workdir),
                "--date",
                str(day),
                "--stage",
                STAGES,
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert run.returncode == 0, run.stderr[-4000:]
    assert master.startswith("spark://127.0.0.1:")
    # the application really ran on the cluster: its executors registered with the master
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "cluster").glob("*.log"))
    assert "Launching executor" in logs or "Asked to launch executor" in logs

    spark = ctx.spark
    for table in TABLES:
        local = ctx.lake.read(table).where(F.col("run_date") == F.lit(day))
        remote = (
            spark.read.format("delta")
            .load(f"{workdir}/lake/{table.replace('.', '/')}")
            .where(F.col("run_date") == F.lit(day))
        )
        assert remote.count() > 0 or local.count() == 0, table
        assertDataFrameEqual(remote, local, checkRowOrder=False)
