#!/usr/bin/env bash
# The bundled Pong agent at three points of its training on the same 150 states of its final play:
# the shipped 7.48M steps, and 5.25M and 300k steps (still losing), both exports recovered from the
# repository's history. Writes recordings/pong_checkpoints.mp4 and its contact sheet (about a minute on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for commit in 60b8c54 cf40967; do   # the agent's exports at 300k and 5.25M steps
    mkdir -p "$scratch/$commit"
    git show "$commit:agents/pong_rlnet/card.json" > "$scratch/$commit/card.json"
    git show "$commit:agents/pong_rlnet/policy.pt" > "$scratch/$commit/policy.pt"
done
python -m rl_insens.cli compare --agents agents/pong_rlnet "$scratch/cf40967" "$scratch/60b8c54" \
    --names "agents/pong_rlnet (shipped; its play gives the states),export of commit cf40967,export of commit 60b8c54" \
    --steps 150 --seed 0 \
    --methods insens,gradient --out recordings/pong_checkpoints.mp4 "$@"
