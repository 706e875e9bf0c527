#!/usr/bin/env bash
# Set up .venv at the repository root with the pinned stack, and make sure Java 17+ exists.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
[ -n "$PYTHON" ] || die "Python 3.11 is required: install it (e.g. 'apt-get install python3.11 python3.11-venv') and re-run."
"$PYTHON" - <<'PY' || die "Python 3.11 or 3.12 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11."
import sys
sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)
PY

java_major() {
  java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit}'
}
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  say "Java 17+ not found; installing OpenJDK 17 from Debian packages"
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null \
      || die "could not install openjdk-17-jre-headless; install Java 17+ yourself (e.g. 'sudo apt-get install openjdk-17-jre-headless') and re-run"
  else
    die "Java 17+ is required by Spark: run 'sudo apt-get install openjdk-17-jre-headless' (or install any JDK 17+ and put it on PATH), then re-run"
  fi
fi
say "java $(java_major) at $(command -v java)"

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv || die "could not create .venv (on Debian: apt-get install python3.11-venv)"
fi
.venv/bin/python -m pip install -q --upgrade "pip==24.3.1" || die "could not upgrade pip (is PyPI reachable?)"
say "installing pinned packages (constraints.txt); the first run downloads ~1 GB"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[airflow,dev]" \
  || die "pip could not install the pinned stack; see the messages above (is PyPI reachable?)"
.venv/bin/python -m pip check >/dev/null || die "pip check found conflicting packages: run '.venv/bin/pip check'"
say "ready: $(.venv/bin/python --version), pyspark $(.venv/bin/python -c 'import pyspark; print(pyspark.__version__)')"
