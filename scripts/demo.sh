#!/usr/bin/env bash
# Set up .venv and record an annotated Pong video with the bundled agent into recordings/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
echo "The recorder is not built yet: see the project's open issues." >&2
exit 1
