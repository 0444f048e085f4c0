#!/usr/bin/env bash
# On a CUDA machine: the engine's exactness tests (CUDA ones included), the engine benchmark on
# the GPU, and the agent's Insens throughput by batch size and memory bound. Usage: scripts/bench_gpu.sh [OUT_DIR] (default: results/gpu).
# Uses whatever python3 has rl-insens's dependencies; set PYTHON to choose another.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt" || true
timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_errors.py -k "cuda or insens" \
    2>&1 | tee "$out/pytest_cuda.txt" && tests=0 || tests=$?
"$python" scripts/bench_engine.py --device cuda --batch 64 \
    --mnist-dir "${MNIST_DIR:-../shared/data/mnist}" --json-out "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.txt"
"$python" scripts/sweep_gpu_memory.py "$out" 2>&1 | tee "$out/insens_batch_memory_sweep.txt"
[ "$tests" = 0 ] || { echo "CUDA tests failed (exit $tests): see $out/pytest_cuda.txt"; exit "$tests"; }
