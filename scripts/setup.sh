#!/usr/bin/env bash
# Set up .venv at the repository root with the pinned stack, and make sure Java 17+ exists.
#
#   scripts/setup.sh demo      what `make demo` needs: the pipeline (no Airflow, no dev tools)
#   scripts/setup.sh airflow   the pipeline and Airflow (`make airflow`)
#   scripts/setup.sh dev       everything: Airflow and the test, lint and type tools (`make test`)
#
# SETUP_DRY_RUN=1 prints what would be installed and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
run() { if [ -n "${SETUP_DRY_RUN:-}" ]; then printf '[setup] would run: %s\n' "$*" >&2; else "$@"; fi; }

PROFILE="${1:-dev}"
case "$PROFILE" in
  demo) SPEC="." ;;
  airflow) SPEC=".[airflow]" ;;
  dev) SPEC=".[airflow,dev]" ;;
  *) die "unknown profile '$PROFILE': demo, airflow or dev" ;;
esac

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
# The headless JRE the system's packages offer: Spark 4 runs on 17 and 21; newer Debian
# releases ship 21 (and no 17), older ones 17.
java_package() {
  local version
  for version in 21 17; do
    if apt-cache show "openjdk-$version-jre-headless" >/dev/null 2>&1; then
      echo "openjdk-$version-jre-headless"
      return 0
    fi
  done
  return 1
}
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    run apt-get update -qq || die "apt-get update failed; install Java 17 or 21 yourself and re-run"
    PACKAGE="$(java_package)" || die "the system packages offer neither openjdk-21-jre-headless nor openjdk-17-jre-headless; install Java 17 or 21 and put it on PATH"
    say "Java 17+ not found; installing $PACKAGE from the system packages"
    DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq "$PACKAGE" >/dev/null \
      || die "could not install $PACKAGE; install Java 17 or 21 yourself and re-run"
  else
    die "Java 17+ is required by Spark: install openjdk-21-jre-headless or openjdk-17-jre-headless (whichever 'apt-cache policy' shows), or any JDK 17/21 on PATH, then re-run"
  fi
fi
[ -n "${SETUP_DRY_RUN:-}" ] || say "java $(java_major) at $(command -v java)"

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PYTHON"
  run "$PYTHON" -m venv .venv || die "could not create .venv (on Debian: apt-get install python3.11-venv)"
fi
run .venv/bin/python -m pip install -q --upgrade "pip==24.3.1" || die "could not upgrade pip (is PyPI reachable?)"
say "installing the pinned packages for '$PROFILE' (constraints.txt): $SPEC"
run .venv/bin/python -m pip install -q -c constraints.txt -e "$SPEC" \
  || die "pip could not install the pinned stack; see the messages above (is PyPI reachable?)"
run .venv/bin/python -m pip check >/dev/null || die "pip check found conflicting packages: run '.venv/bin/pip check'"
# Delta's jars, resolved once through Spark's Ivy into .venv/share/policylake/jars: every Spark
# start afterwards finds them locally (no resolution, no Ivy report, no network).
say "fetching Delta's jars from Maven Central (once)"
if [ -n "${SETUP_DRY_RUN:-}" ]; then
  run .venv/bin/python -m jobs.core.jars
else
  .venv/bin/python -m jobs.core.jars >/dev/null 2>.venv/fetch-jars.log \
    || die "could not fetch Delta's jars (is Maven Central reachable?): $(tail -n 1 .venv/fetch-jars.log)"
fi
[ -n "${SETUP_DRY_RUN:-}" ] || say "ready: $(.venv/bin/python --version), pyspark $(.venv/bin/python -c 'import pyspark; print(pyspark.__version__)')"
