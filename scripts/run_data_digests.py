"""Digests of a short recording's run data, to show that a change leaves recordings as they were.

Records 40 steps of the bundled agent with Insens and the gradient (seed 0, one torch thread)
and prints a sha256 prefix of every array of the run directory: the per-step table and each
chunk's screens, observations, RAM and maps. Run it in two checkouts and compare:

    PYTHONPATH=. python scripts/run_data_digests.py > after.txt
    (cd ../before && PYTHONPATH=. python scripts/run_data_digests.py) > before.txt
    diff before.txt after.txt && echo identical
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch

from rl_insens.record import record


def main() -> None:
    torch.set_num_threads(1)  # one thread: the same reductions in the same order every run
    with tempfile.TemporaryDirectory() as tmp:
        run = record("agents/pong_rlnet", Path(tmp) / "digest.mp4", max_steps=40,
                     methods=("insens", "gradient"), batch=8, progress=False, device="cpu").run_dir
        arrays = dict(np.load(run / "steps.npz"))
        for i, chunk in enumerate(sorted((run / "chunks").glob("*.npz"))):
            arrays |= {f"chunk{i}/{key}": value for key, value in np.load(chunk).items()}
    for key in sorted(arrays):
        print(key, hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()[:16])


if __name__ == "__main__":
    main()
