"""The Spark application Airflow's SparkSubmitOperator launches: the `policylake` command
line itself, run inside spark-submit, e.g.

    spark-submit jobs/cli/submit.py run --date D --stage ingest --source idp
    spark-submit jobs/cli/submit.py run --date D --stage validate --blocking-sources all
    spark-submit jobs/cli/submit.py train --date D --days 28
    spark-submit jobs/cli/submit.py feedback --date D

Master, memory and packages come from the spark-submit command (the Airflow Spark
connection); everything else from `policylake.yaml` / `$POLICYLAKE_CONFIG` / the
`POLICYLAKE__...` environment, and relative paths are rooted at `--workdir` or
`$POLICYLAKE_WORKDIR`, exactly as for `policylake` itself. Exit codes are the command
line's: 0 done, 1 a stage failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts jobs/cli/ first on sys.path, where its modules would shadow
# top-level ones of the same names; the package is found through the installed project.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from jobs.cli.app import main

if __name__ == "__main__":
    main()
