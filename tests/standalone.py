"""A real Spark standalone cluster on loopback (one master, two workers) for tests.

Started from the pyspark installation's own `spark-class`, so no Spark download is
needed. Processes are stopped when the context exits, even if the test fails.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{log.name} exited early:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if log.exists() and re.search(pattern, log.read_text(errors="replace")):
            return
        time.sleep(0.5)
    raise TimeoutError(
        f"{log.name}: no '{pattern}' within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}"
    )


@contextmanager
def standalone_cluster(
    workdir: Path, workers: int = 2, cores: int = 1, memory: str = "2g"
) -> Iterator[str]:
    """Yield the master URL `spark://127.0.0.1:<port>` of a running cluster."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_MASTER_HOST="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        SPARK_WORKER_DIR=str(workdir / "work"),
        SPARK_LOG_DIR=str(workdir / "logs"),
    )
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = workdir / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(_spark_class()), *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        procs.append(proc)
        return proc, log

    try:
        master, master_log = start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
        )
        _wait_for(master_log, r"I have been elected leader|Starting Spark master", master, 90)
        for i in range(workers):
            worker, worker_log = start(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(workdir / f"work{i}"),
            )
            _wait_for(worker_log, r"Successfully registered with master", worker, 90)
        yield url
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
