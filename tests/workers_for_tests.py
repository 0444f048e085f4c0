"""Tasks for the worker-pool tests: importable by spawned workers without loading torch."""

import os
import time
from pathlib import Path


def fail_first_sleep_others(item: tuple[int, str]) -> int:
    index, folder = item
    (Path(folder) / f"{os.getpid()}.pid").touch()
    if index == 0:
        time.sleep(1.0)  # long enough for every worker to have started its task
        raise RuntimeError("task 0 failed")
    time.sleep(30)
    return index
