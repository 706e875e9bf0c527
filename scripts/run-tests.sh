#!/usr/bin/env bash
# Run the test suite in two pytest-xdist workers (POLICYLAKE_TEST_WORKERS, 0 = in this
# process; `-n N` among the arguments wins); pytest's exit code 5 (no tests collected) is a
# failure, not a pass. The 25 slowest tests and fixtures are listed at the end (issue 23's
# suite budget is watched from them).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -n "${POLICYLAKE_TEST_WORKERS:-2}" --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run-tests: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$rc"
