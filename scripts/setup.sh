#!/usr/bin/env bash
# Set up Hallmark on a fresh machine: .venv with the `hallmark` command, the Kafka jars, Chromium for the
# console's browser tests. Idempotent: a second run only checks. Needs python3.11+, Java 17 and Maven (for the
# local Kafka broker) and, when Chromium is missing, Debian's apt (as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
# The reviewer console's browser tests drive Debian's Chromium through Playwright (no browser is ever downloaded).
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium (browser tests)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import hallmark, torch, diffusers, faust, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.hallmark-installed ]; then
  echo "setup: installing hallmark and its dependencies into .venv (torch is large the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  touch .venv/.hallmark-installed
fi
if [ -f hallmark/kafka/pom.xml ]; then
  .venv/bin/python -m hallmark.broker fetch >&2
fi
echo "setup: ready — .venv/bin/hallmark" >&2
