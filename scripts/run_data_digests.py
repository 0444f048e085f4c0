"""Digests of a short recording's run data, to show that a change leaves recordings as they were.

Records 40 steps of the bundled agent with Insens and the gradient (seed 0, one torch thread)
and prints a sha256 prefix of every array of the run directory: the per-step table and each
chunk's screens, observations, RAM and maps. Run it in two checkouts and compare:

    PYTHONPATH=. python scripts/run_data_digests.py > after.txt
    (cd ../before && PYTHONPATH=. python ../after/scripts/run_data_digests.py) > before.txt
    diff before.txt after.txt && echo identical

(the second line runs this script, and records this checkout's agent, with the package of
``../before``).

The float arrays depend on the CPU's kernels and on how many frames each attribution call
takes, so compare on one machine; ``tests/test_run_data.py`` does it against the version before
the restructure, with that version's batching.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from rl_insens.record import record

AGENT = Path(__file__).resolve().parent.parent / "agents" / "pong_rlnet"


def digests(agent: Path = AGENT) -> dict[str, str]:
    """``{array name: sha256 prefix}`` for the run data of 40 recorded steps of ``agent``."""
    torch.set_num_threads(1)  # one thread: the same reductions in the same order every run
    with tempfile.TemporaryDirectory() as tmp:
        run = record(agent, Path(tmp) / "digest.mp4", max_steps=40, methods=("insens", "gradient"), batch=8,
                     progress=False, device="cpu").run_dir
        arrays = dict(np.load(run / "steps.npz"))
        for i, chunk in enumerate(sorted((run / "chunks").glob("*.npz"))):
            arrays |= {f"chunk{i}/{key}": value for key, value in np.load(chunk).items()}
    return {key: hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()[:16]
            for key in sorted(arrays)}


if __name__ == "__main__":
    for key, digest in digests(Path(sys.argv[1]) if len(sys.argv) > 1 else AGENT).items():
        print(key, digest)
