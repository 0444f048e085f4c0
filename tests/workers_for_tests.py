"""Tasks for the worker-pool tests: importable by spawned workers without loading torch."""

import os
import time
from pathlib import Path


def fail_first_sleep_others(item: tuple[int, str, int]) -> int:
    """Task 0 fails once ``busy`` workers have started a task (each leaves its pid in ``folder``);
    every other task would take 30 s."""
    index, folder, busy = item
    (Path(folder) / f"{os.getpid()}.pid").touch()
    if index == 0:
        deadline = time.monotonic() + 10
        while len(list(Path(folder).glob("*.pid"))) < busy and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("task 0 failed")
    time.sleep(30)
    return index
