#!/usr/bin/env bash
# Set up .venv and record an annotated Pong video (about 300 agent steps, every attribution
# method) with the bundled agent into recordings/. Extra arguments go to `rl-insens record`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/rl-insens record --agent agents/pong_rlnet --max-steps 300 --out recordings/demo.mp4 "$@"
echo "Open recordings/demo.mp4 (contact sheet: recordings/demo.png); step through it with:"
echo "  .venv/bin/rl-insens view recordings/demo.run"
