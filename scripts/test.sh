#!/usr/bin/env bash
# Set up .venv (first run only installs) and run the test suite; extra arguments go to pytest:
# `scripts/test.sh -m "not slow"` leaves out the tests marked slow (see pyproject.toml), for quick work.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/ruff check rl_insens tests scripts
.venv/bin/python -m pytest "$@"
