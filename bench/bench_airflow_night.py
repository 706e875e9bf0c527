"""One night of the demo organisation through the daily DAG, both ways of running it
(`airflow.daily_tasks`): a Spark application per stage (the default) and the whole night in
one (issue [4/8]'s Airflow target).

    python -m bench.bench_airflow_night --label demo-night --users 150

The telemetry (three days) is generated once into `bench/scratch/airflow-night/<label>/`
(reused while its parameters match), and the first two days are run with `policylake run`
(untimed): the history the night builds on. For each way, that lake is copied and the third
day is run with `dag.test()` of `policylake_daily` in a fresh process with its own Airflow
home (SQLite, `spark_default` = `local[*]` as `make airflow` sets it): every Spark task is a
real `spark-submit` of `jobs/cli/submit.py`, run as the scheduler's executor would run it,
without the scheduler's polling between tasks. Timed: the whole `dag.test()`, and each task
from Airflow's own start and end times. Results are merged into
`bench/results/airflow_night.json` under `<label>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.bench_raw_to_silver import generated, git_commit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "airflow_night.json"
SCRATCH = BENCH / "scratch" / "airflow-night"
MODES = ("per_stage", "one_application")
LOCAL_SPARK = json.dumps({"conn_type": "spark", "host": "local[*]"})

# Run in the child process, where AIRFLOW_HOME is set before Airflow is imported.
CHILD = """
import json, sys, time
from datetime import UTC, datetime
from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

day = datetime.fromisoformat(sys.argv[1]).replace(tzinfo=UTC)
bag = DagBag(dag_folder=sys.argv[2])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["policylake_daily"]
for task in dag.tasks:
    task.retries = 0
began = time.perf_counter()
run = dag.test(logical_date=day)
seconds = time.perf_counter() - began
with create_session() as session:
    tis = session.scalars(
        select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id)
    ).all()
    tasks = {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): {
            "state": str(getattr(ti.state, "value", ti.state)),
            "seconds": round((ti.end_date - ti.start_date).total_seconds(), 1)
            if ti.start_date and ti.end_date else None,
        }
        for ti in tis
    }
print(json.dumps({"state": str(getattr(run.state, "value", run.state)),
                  "seconds": round(seconds, 1), "tasks": tasks}))
"""


def _environment(home: Path, workdir: Path, data: Path, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLICYLAKE", "AIRFLOW"))}
    bin_dir = str(Path(sys.executable).parent)  # spark-submit of the pyspark installation
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW_CONN_SPARK_DEFAULT=LOCAL_SPARK,
        POLICYLAKE_WORKDIR=str(workdir),
        POLICYLAKE__PATHS__RAW_ROOT=str(data / "raw"),
        POLICYLAKE__PATHS__REFERENCE_ROOT=str(data / "reference"),
        POLICYLAKE__AIRFLOW__DAILY_TASKS=mode,
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def history(data: Path, first: date, last: date) -> None:
    """The days before the night, run once into `data/lake` (reused)."""
    if (data / "lake" / "gold" / "policy_recommendations").is_dir():
        return
    shutil.rmtree(data / "lake", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYLAKE")}
    command = [str(Path(sys.executable).with_name("policylake")), "run", "--workdir", str(data)]
    command += ["--from", first.isoformat(), "--to", last.isoformat()]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def night(data: Path, mode: str, day: date) -> dict[str, Any]:
    """`dag.test()` of `day` on a copy of the history's lake, in a fresh process."""
    workdir = data / f"run-{mode}"
    shutil.rmtree(workdir, ignore_errors=True)
    home = workdir / "airflow-home"
    home.mkdir(parents=True)
    shutil.copytree(data / "lake", workdir / "lake")
    env = _environment(home, workdir, data, mode)
    migrate = [sys.executable, "-m", "airflow", "db", "migrate"]
    subprocess.run(migrate, check=True, env=env, capture_output=True, timeout=600)
    log = workdir / "dag-test.log"
    command = [sys.executable, "-c", CHILD, day.isoformat(), str(REPO / "dags")]
    with log.open("w") as out:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dag.test() of {mode} failed (exit {done.returncode}); see {log}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="demo-night")
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 7))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--results", type=Path, default=RESULTS)
    opts = parser.parse_args()
    data = SCRATCH / opts.label
    lines = generated(data, opts.start, 3, opts.users, 7)
    day = opts.start + timedelta(days=2)
    history(data, opts.start, day - timedelta(days=1))
    run: dict[str, Any] = {
        "git": git_commit(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": opts.users,
        "raw_lines_three_days": lines,
        "night": day.isoformat(),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "modes": {},
    }
    for mode in opts.modes.split(","):
        began = time.perf_counter()
        run["modes"][mode] = night(data, mode, day)
        print(f"{mode:16} {run['modes'][mode]['state']:8} {time.perf_counter() - began:7.1f} s")
    run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results = json.loads(opts.results.read_text()) if opts.results.is_file() else {}
    results[opts.label] = run
    opts.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{opts.label}: -> {opts.results}")


if __name__ == "__main__":
    main()
