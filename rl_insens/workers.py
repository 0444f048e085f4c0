"""What a task needs in the worker process that runs it: each agent loaded once, one torch thread.

Evaluation, recordings and the faithfulness checks run independent tasks here, in worker
processes or on Ray (see :mod:`rl_insens.parallel`); a worker keeps the agents it has loaded
for its next tasks, and runs each task on one thread so that every backend gives the same
results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .agents import Agent, load_agent

_AGENTS: dict[tuple[str, str | None], Agent] = {}


def worker_agent(path: str, env: str | None = None) -> Agent:
    """The agent at ``path`` set to play ``env`` (or its own game), loaded once per worker process."""
    if (path, env) not in _AGENTS:
        _AGENTS[path, env] = load_agent(path, env=env)
    return _AGENTS[path, env]


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread for the duration of a task: one core per worker, and results identical
    whatever the backend (reductions keep one order)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
