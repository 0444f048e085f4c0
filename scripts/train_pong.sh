#!/usr/bin/env bash
# Resume training the shipped Pong agent in the background-friendly way: niced, 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
exec nice -n 15 .venv/bin/rl-insens train --resume --threads 2 "$@"
