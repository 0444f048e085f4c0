"""Every check for every method, as independent tasks that run here, in processes or on Ray.

One task per method measures its maps on the sampled frames; one per closed-loop episode
plays. A random map goes through the same measurements as the methods, as the baseline each
of them must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..attribution import attribute
from ..parallel import run_unordered
from .metrics import (
    FRACTION,
    SIGMA,
    SUBSTRATES,
    deletion_insertion,
    noise_agreement,
    object_saliency,
    random_maps,
    summary,
)
from .play import Sample, closed_loop
from .randomisation import cascading_randomisation, randomisation_check

CHECKS = ("noise", "insertion", "randomisation", "cascading", "objects", "interventions")
"""``noise``: the greedy action under noise on the least/most relevant inputs; ``insertion``:
deletion and insertion curves on each substrate; ``randomisation``: the top two layers
re-initialised; ``cascading``: every layer, from the output down; ``objects``: map mass on
the game's objects and the pointing game; ``interventions``: does saliency on a moved object
predict how much the policy's output changes."""
RANDOM = "random"
"""The baseline: maps of uniform noise."""
RANDOMISED_FRAMES = 32
"""Frames for the randomisation checks, which attribute once per randomised network."""


def check_checks(checks) -> tuple[str, ...]:
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise ValueError(f"unknown check(s) {unknown or list(checks)}; choose from {', '.join(CHECKS)}")
    return tuple(checks)


def method_maps(network: nn.Module, x: torch.Tensor, method: str, batch: int = 16) -> torch.Tensor:
    if method == RANDOM:
        return random_maps(tuple(x.shape))
    target = network(x).argmax(1)
    return torch.cat([attribute(network, part, method, target=t)
                      for part, t in zip(x.split(batch), target.split(batch), strict=True)])


def measure_method(network: nn.Module, x: torch.Tensor | Sample, method: str, batch: int = 16,
                   fraction: float = FRACTION, sigma: float = SIGMA, checks=CHECKS) -> dict:
    """The ``checks`` of one method (or of ``RANDOM`` maps) on the sampled frames."""
    sample = x if isinstance(x, Sample) else Sample(x, game="")
    x = sample.x
    maps = method_maps(network, x, method, batch)
    few = min(len(x), RANDOMISED_FRAMES)
    result: dict = {}
    if "noise" in checks and method != RANDOM:
        result["noise_agreement"] = noise_agreement(network, x, maps, fraction, sigma)
    if "insertion" in checks:
        result["curves"] = {base: deletion_insertion(network, x, maps, base=base) for base in SUBSTRATES}
    if "randomisation" in checks and method != RANDOM:
        result["randomisation_spearman"] = randomisation_check(network, x[:few], method, maps[:few])
    if "cascading" in checks and method != RANDOM:
        result["cascading"] = cascading_randomisation(network, x[:few], method, maps[:few])
    newest = maps[:, -1].cpu().numpy()
    if "objects" in checks and sample.has_objects:
        result["objects"] = objects_report(newest, sample.object_masks)
    if "interventions" in checks and sample.interventions:
        result["interventions"] = interventions_report(newest, sample)
    return result


def objects_report(newest: np.ndarray, object_masks: dict[str, np.ndarray]) -> dict:
    """Per object and for all together: mass on it (with 95% interval), its area, pointing rate."""
    report = {}
    together = np.any(np.stack(list(object_masks.values())), axis=0)
    for name, masks in {**object_masks, "all objects": together}.items():
        s = object_saliency(newest, masks)
        report[name] = {"mass": summary(s["mass"]), "area": float(s["area"].mean()),
                        "pointing": float(s["pointing"].mean())}
    return report


def interventions_report(newest: np.ndarray, sample: Sample) -> dict:
    """Rank correlation, over every kept intervention, between the map's mass on the moved
    object (at the frame it was moved from) and the change it caused in the policy's logits."""
    saliency = [float(object_saliency(newest[i["frame"]][None],
                                      sample.object_masks[i["object"]][i["frame"]][None])["mass"][0])
                for i in sample.interventions]
    change = [i["logit_change"] for i in sample.interventions]
    rho = stats.spearmanr(saliency, change).statistic if len(set(saliency)) > 1 else float("nan")
    return {"spearman_saliency_vs_logit_change": float(rho), "interventions": len(change),
            "dropped": sample.dropped_interventions}


# ----- tasks ----------------------------------------------------------------------------------------
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
        from ..workers import one_thread, worker_agent

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
        from ..workers import one_thread, worker_agent

        with one_thread():
            return closed_loop(worker_agent(self.agent, self.env), self.method, self.choice, self.env_seed,
                               self.fraction, self.sigma, self.max_steps)


def _run(task: MethodTask | ClosedLoopTask) -> dict:
    return task.run()


def condition_name(method: str | None, choice: str) -> str:
    """``clean``, ``random``, or e.g. ``insens/lowest``."""
    return choice if method is None else f"{method}/{choice}"


def run_faithfulness(agent_path: str, frames: Sample | torch.Tensor, methods, closed_loop_episodes: int = 0,
                     closed_loop_steps: int = 1000, seed: int = 0, fraction: float = FRACTION,
                     sigma: float = SIGMA, workers: int = 1, backend: str = "process",
                     address: str | None = None, progress: bool = True, env: str | None = None,
                     checks=CHECKS) -> dict:
    """Every check for every method and the random baseline, as independent tasks; the report.

    ``env`` names the agent's game where its files do not (see :func:`~rl_insens.load_agent`)."""
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
