"""Recordings keep their run data through the restructure into one job per module.

The version before it (``BEFORE``) is taken from the repository's history and records the same
40 steps as the code here, on this machine, in fresh processes; every array of the two run
directories must be bit-identical. The code here runs with the old version's batching of
attribution calls (two frames a call), since batch sizes change the float kernels' last bits;
the batching is the one intended difference.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "9badc94"
"""The last version before the restructure."""

RUN = """
import json, sys
sys.path.insert(0, {scripts!r})
{patch}
import rl_insens
from run_data_digests import digests
print(json.dumps({{"package": rl_insens.__file__, "digests": digests()}}))
"""
OLD_BATCHING = "import rl_insens.inspection as i; i.frames_per_call = lambda method, device, frames: 2"


def _digests(package_root: Path, patch: str = "") -> dict[str, str]:
    code = RUN.format(scripts=str(ROOT / "scripts"), patch=patch)
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=package_root, capture_output=True,
                          text=True, timeout=600)  # cwd: "-c" puts it first on the import path
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(package_root)  # that version's code, not the installed one
    return found["digests"]


def _checkout(commit: str, where: Path) -> Path:
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "rl_insens"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"version {commit} is not in this checkout's history (a shallow clone?)")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


@pytest.mark.slow
def test_run_data_bit_identical_to_the_version_before_the_restructure(tmp_path):
    before = _digests(_checkout(BEFORE, tmp_path / "before"))
    after = _digests(ROOT, OLD_BATCHING)
    assert len(after) == 40  # the per-step table and five chunks of screens, observations, RAM and maps
    assert after == before
