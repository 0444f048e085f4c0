"""What the agent's network does on a batch of observations: its outputs, and attribution maps.

The one inspection step that recording, comparison, the training callback and the Gymnasium
wrapper share: a forward pass through the engine session, then each method batched over the
frames that need maps. :func:`inspect_play` gives a stream of play (:mod:`rl_insens.rollout`)
these answers, a chunk of steps at a time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .agents import Agent
from .attribution import METHODS, attribute
from .rollout import Step

DEFAULT_METHODS = tuple(METHODS)


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``; a ``ValueError`` for a
    device this machine does not have."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: there is no CUDA device here; use cpu")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"device {device!r}: there are only {count} CUDA device(s) here (cuda:0..)")
    elif chosen.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return chosen


def check_methods(methods) -> tuple[str, ...]:
    """``methods`` as a tuple, or a one-line ``ValueError`` when none or an unknown one is given."""
    if not methods:
        raise ValueError(f"no attribution method given; choose from {sorted(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution method(s) {unknown}; choose from {sorted(METHODS)}")
    return tuple(methods)


@dataclass
class StepInspection:
    """What the network did on one observation."""

    logits: np.ndarray
    action_probs: np.ndarray
    action: int
    value: float | None
    active_fraction: float
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    """Attribution maps, each of the observation's shape (absent on skipped steps)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Compute time of each method for the whole batch the frame was part of, divided evenly."""


ONE_FRAME_PER_CALL_ON_CPU = ("insens", "integrated_gradients")
"""Methods given one frame per call on a CPU: their work grows with each frame (the engine's
windows, IG's 50 steps), so a stop request waits a fraction of a second at most, and they are
fastest there a frame at a time. The others take the whole batch, where each call's fixed cost
(Zennit's hooks, a forward pass) is shared: 2-3x less time a frame than two at a time.

With more than one torch thread, these frames go side by side, one thread each
(:func:`frame_threads`): the engine's many small operations gain little, and unsteadily, from a
second thread within a frame (``scripts/bench_frame_threads.py``). They must put no hooks on the
model, which the threads share."""


def frames_per_call(method: str, device: torch.device, frames: int) -> int:
    """How many of ``frames`` frames one attribution call of ``method`` takes."""
    return 1 if device.type == "cpu" and method in ONE_FRAME_PER_CALL_ON_CPU else max(frames, 1)


@functools.cache
def frame_threads(count: int) -> ThreadPoolExecutor:
    """``count`` threads that each run torch on one thread (kept for the next batch)."""
    return ThreadPoolExecutor(count, thread_name_prefix="rl-insens-frame", initializer=torch.set_num_threads,
                              initargs=(1,))


def attribute_parts(session, x: torch.Tensor, method: str, targets: torch.Tensor, parts: list[list[int]],
                     should_stop: Callable[[], bool] | None) -> list[torch.Tensor]:
    """Maps of ``method`` for each part of ``x`` (a list of frame indices), one call per part;
    single frames on a CPU with more than one torch thread go side by side on
    :func:`frame_threads`. ``should_stop()`` is asked before each call; true raises
    ``KeyboardInterrupt``."""
    def attribute_part(part: list[int]) -> torch.Tensor:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        batch = x if len(part) == len(x) else x[part]  # the whole batch reuses its forward pass
        return attribute(session, batch, method, target=targets[part])

    threads = torch.get_num_threads()
    if x.device.type != "cpu" or threads == 1 or len(parts) < 2 or any(len(p) > 1 for p in parts):
        return [attribute_part(part) for part in parts]
    futures = [frame_threads(threads).submit(attribute_part, part) for part in parts]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()


def inspect_frames(agent: Agent, observations, methods, with_maps=None,
                   should_stop: Callable[[], bool] | None = None, actions=None) -> list[StepInspection]:
    """Policy outputs for a batch of observations, and maps where ``with_maps`` is true.

    Methods run batched over the frames that need maps (on a CPU, the costly ones a frame per
    call: see :data:`ONE_FRAME_PER_CALL_ON_CPU`); between calls ``should_stop()`` is asked, and
    a true answer raises ``KeyboardInterrupt``. ``actions`` are the actions taken on these
    observations, where they are known: each inspection reports its frame's and the maps explain
    it (otherwise the greedy action of this batch's pass, which a near tie between two actions
    could set apart from a one-frame pass's by float rounding).
    """
    x = agent.preprocess(np.asarray(observations))
    view = agent.session(x)  # one forward pass: logits, neuron state, and Insens of the whole batch
    logits = view.logits
    with torch.no_grad():
        values = agent.value_network(x)[:, 0].cpu().numpy() if agent.value_network is not None else None
    probs = agent.action_probs(logits)
    active = view.neurons.active_fraction.cpu().numpy()
    targets = logits.argmax(1) if actions is None else _checked_actions(actions, logits)
    results = [
        StepInspection(logits[i].cpu().numpy(), probs[i].cpu().numpy(), int(targets[i]),
                       None if values is None else float(values[i]), float(active[i]))
        for i in range(len(x))
    ]
    chosen = [i for i in range(len(x)) if with_maps is None or with_maps[i]]
    for method in methods:
        per_call = frames_per_call(method, x.device, len(chosen))
        parts = [chosen[start:start + per_call] for start in range(0, len(chosen), per_call)]
        began = time.perf_counter()
        maps = attribute_parts(agent.session, x, method, targets, parts, should_stop)
        if x.is_cuda:
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - began) / max(len(chosen), 1)
        for part, part_maps in zip(parts, maps, strict=True):
            for j, i in enumerate(part):
                results[i].maps[method] = part_maps[j].cpu().numpy()
                results[i].seconds[method] = elapsed
    return results


def _checked_actions(actions, logits: torch.Tensor) -> torch.Tensor:
    """``actions`` as a tensor beside ``logits``, or a ``ValueError`` when they do not fit them."""
    taken = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=logits.device).reshape(-1)
    if len(taken) != len(logits):
        raise ValueError(f"{len(taken)} actions for {len(logits)} observations")
    if len(taken) and not (0 <= int(taken.min()) and int(taken.max()) < logits.shape[1]):
        raise ValueError(f"actions must be in 0..{logits.shape[1] - 1}, got {taken.tolist()}")
    return taken


@dataclass
class InspectedStep:
    """A step of play with what the network did on its observation."""

    step: Step
    inspection: StepInspection
    fresh: bool
    """The maps were computed at this step (otherwise they are the last fresh step's)."""


def inspect_play(agent: Agent, steps: Iterable[Step], methods, batch: int = 16, every: int = 1,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[list[InspectedStep]]:
    """Steps of play with the network's answers, in chunks of ``batch`` steps that end early at
    an episode's end (every method runs batched over a chunk). Each inspection reports, and its
    maps explain, the action the step took.

    Args:
        agent: the agent that played.
        steps: the play, as :func:`rl_insens.rollout.play` gives it.
        methods: attribution methods (see :func:`~rl_insens.attribution.attribute`).
        batch: steps inspected together.
        every: compute maps on every ``every``-th step only; the steps between carry the last maps.
        should_stop: asked before each step and between attribution calls; a true answer raises
            ``KeyboardInterrupt``, and the steps of the unfinished chunk are dropped.

    Yields:
        Each chunk as a list of :class:`InspectedStep`.
    """
    pending: list[Step] = []
    done, last_maps = 0, {}

    def inspected(chunk: list[Step]) -> list[InspectedStep]:
        fresh = [(done + i) % every == 0 for i in range(len(chunk))]
        inspections = inspect_frames(agent, np.stack([s.observation for s in chunk]), methods, fresh,
                                     should_stop, actions=[s.action for s in chunk])
        for inspection, is_fresh in zip(inspections, fresh, strict=True):
            if is_fresh:
                last_maps.update(inspection.maps)
            else:
                inspection.maps = dict(last_maps)
        return [InspectedStep(*found) for found in zip(chunk, inspections, fresh, strict=True)]

    for step in steps:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        pending.append(step)
        if len(pending) == batch or step.done:
            chunk, pending = pending, []
            yield inspected(chunk)
            done += len(chunk)
    if pending:
        yield inspected(pending)
