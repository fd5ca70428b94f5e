#!/usr/bin/env bash
# Set up Hallmark on a fresh machine: .venv with the `hallmark` command, the Kafka jars, dev keys.
# Idempotent: a second run only checks. Needs python3.11+, Java 17 and Maven (for the local Kafka broker).
set -euo pipefail
cd "$(dirname "$0")/.."
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
