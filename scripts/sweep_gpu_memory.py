"""Insens throughput of the bundled agent on CUDA by batch size and ``max_memory``, with peaks.

Shows what the engine's memory bound buys on a GPU (larger chunks of frames, fewer kernel
launches per frame) and that the measured peak stays near the bound; checks the GPU result
against the CPU one first.

    python scripts/sweep_gpu_memory.py results/gpu
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch
from bench_engine import greedy_frames, median_time

import rl_insens as ri

MEMORY_GIB = [1, 4, 8]
BATCHES = [1, 16, 64, 256]


def main(out_dir: Path) -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    loaded = ri.load_agent("agents/pong_rlnet")
    frames = greedy_frames(loaded, max(BATCHES))
    agent = loaded.network.eval()
    on_cpu = ri.insens(agent, frames[:8])
    gpu, x = agent.cuda(), frames.cuda()
    error = float((ri.insens(gpu, x[:8]).cpu() - on_cpu).abs().max() / on_cpu.abs().max())
    print(f"agent: relative error cuda vs cpu on 8 frames {error:.2e}", flush=True)
    rows = []
    for gib, batch in itertools.product(MEMORY_GIB, BATCHES):
        bound, inputs = gib << 30, x[:batch]
        ri.insens(gpu, inputs, bound)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated()
        seconds = median_time(lambda b=inputs, m=bound: ri.insens(gpu, b, m), "cuda", 3 if batch >= 64 else 5)
        peak = (torch.cuda.max_memory_allocated() - start_bytes) / 2**30
        rows.append({"max_memory_gib": gib, "batch": batch, "seconds": seconds,
                     "frames_per_s": batch / seconds, "peak_gib": peak})
        print(f"max_memory {gib:>4} GiB batch {batch:>3}: {seconds * 1e3:8.1f} ms/call "
              f"{batch / seconds:8.1f} frames/s peak {peak:.2f} GiB", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "insens_batch_memory_sweep.json").write_text(json.dumps(
        {"relative_error_vs_cpu": error, "rows": rows, "gpu": torch.cuda.get_device_name(),
         "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/gpu"))
