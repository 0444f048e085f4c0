"""Every check for every method, as independent tasks that run here, in processes or on Ray.

One task per method measures its maps on the sampled frames (:mod:`.checks`); one per
closed-loop episode plays (:mod:`.play`). The random baseline is measured as a method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..parallel import run_unordered
from ..workers import one_thread, worker_agent
from .checks import CHECKS, RANDOM, check_checks, measure_method
from .metrics import FRACTION, SIGMA
from .play import Sample, closed_loop


@dataclass(frozen=True)
class MethodTask:
    """The frame measurements of one method."""

    agent: str
    method: str
    frames: Sample
    fraction: float = FRACTION
    sigma: float = SIGMA
    env: str | None = None
    checks: tuple[str, ...] = CHECKS

    def run(self) -> dict:
        """Measure, in this worker, with the agent it has loaded."""
        with one_thread():
            return measure_method(worker_agent(self.agent, self.env).network, self.frames, self.method,
                                  fraction=self.fraction, sigma=self.sigma, checks=self.checks)


@dataclass(frozen=True)
class ClosedLoopTask:
    """One closed-loop episode of one condition (``method`` is None for clean and random)."""

    agent: str
    method: str | None
    choice: str
    env_seed: int
    fraction: float = FRACTION
    sigma: float = SIGMA
    max_steps: int = 1000
    env: str | None = None

    def run(self) -> dict:
        """Play the episode, in this worker, with the agent it has loaded."""
        with one_thread():
            return closed_loop(worker_agent(self.agent, self.env), self.method, self.choice, self.env_seed,
                               self.fraction, self.sigma, self.max_steps)


def _run(task: MethodTask | ClosedLoopTask) -> dict:
    return task.run()


def condition_name(method: str | None, choice: str) -> str:
    """``clean``, ``random``, or e.g. ``insens/lowest``."""
    return choice if method is None else f"{method}/{choice}"


def run_faithfulness(agent_path: str, frames: Sample | torch.Tensor, methods: Sequence[str],
                     closed_loop_episodes: int = 0, closed_loop_steps: int = 1000, seed: int = 0,
                     fraction: float = FRACTION, sigma: float = SIGMA, workers: int = 1,
                     backend: str = "process", address: str | None = None, progress: bool = True,
                     env: str | None = None, checks: Sequence[str] = CHECKS) -> dict:
    """Every check for every method and the random baseline, as independent tasks; the report.

    Args:
        agent_path: the agent, as :func:`~rl_insens.load_agent` takes it (each worker loads it).
        frames: the sampled frames, or a :class:`Sample` with the game's objects and
            interventions too.
        methods: the attribution methods to check.
        closed_loop_episodes: episodes per closed-loop condition (clean, random, and each
            method's lowest and highest inputs under noise); 0 for none.
        closed_loop_steps: agent steps after which a closed-loop episode is cut off.
        seed: the closed-loop episodes' seed; episode ``e`` resets with ``seed * 100003 + e``.
        fraction: the share of inputs that get noise.
        sigma: that noise's standard deviation.
        workers: how many tasks run at once (see :func:`~rl_insens.parallel.run_unordered`).
        backend: ``process`` or ``ray``, where the tasks run.
        address: the Ray cluster's address, for ``backend="ray"``.
        progress: show a progress bar.
        env: the agent's game where its files do not name it.
        checks: which of ``CHECKS`` to run.

    Returns:
        ``{"methods": each method's checks, "closed_loop": each condition's mean return and
        agreement, and its episodes}``.
    """
    from tqdm import tqdm

    checks = check_checks(checks)
    sample = frames if isinstance(frames, Sample) else Sample(frames, game="")
    with_baseline = {"insertion", "objects", "interventions"} & set(checks)
    measured = [*methods, RANDOM] if with_baseline else list(methods)
    tasks: list = [MethodTask(agent_path, m, sample, fraction, sigma, env, checks) for m in measured]
    conditions = [(None, "clean"), (None, "random")]
    conditions += [(m, c) for m in methods for c in ("lowest", "highest")]
    tasks += [ClosedLoopTask(agent_path, m, c, seed * 100_003 + e, fraction, sigma, closed_loop_steps, env)
              for m, c in conditions for e in range(closed_loop_episodes)]
    methods_report: dict = {m: {} for m in measured}
    loops: dict = {}
    for index, result in tqdm(run_unordered(_run, tasks, workers, backend, address), total=len(tasks),
                              desc="tasks", disable=not progress):
        task = tasks[index]
        if isinstance(task, MethodTask):
            methods_report[task.method] = result
        else:
            loops.setdefault(condition_name(task.method, task.choice), {})[task.env_seed] = result
    closed = {}
    for name, episodes in loops.items():
        rows = [episodes[s] for s in sorted(episodes)]
        closed[name] = {"mean_return": float(np.mean([r["return"] for r in rows])),
                        "mean_agreement": float(np.mean([r["agreement"] for r in rows])), "episodes": rows}
    return {"methods": methods_report, "closed_loop": closed}
