#!/usr/bin/env bash
# Resume training the shipped Pong agent on a CUDA machine for a fixed budget, then checkpoint and stop.
# Usage: scripts/train_pong_gpu.sh [MINUTES] (default 5). On an H200 with 16 CPU cores it ran about
# 1500 agent steps/s (the environments step on the CPU; PPO's updates run on the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-5}
python=${PYTHON:-python3}
"$python" -m rl_insens.cli train --resume --device cuda --threads 4 &
trainer=$!
trap 'kill -TERM "$trainer" 2>/dev/null || true' INT TERM
sleep $((minutes * 60)) &
wait $! || true
kill -TERM "$trainer" 2>/dev/null || true  # the trainer checkpoints, then exits
wait "$trainer" || true
