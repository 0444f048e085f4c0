"""A recorded run in a few numbers, the ones worth following over training.

Read from the run directory alone (its frames, rewards, maps and, for ALE games, the
console's RAM), so they can be computed for any recording, and are the same whoever asks:
the share of active neurons per layer (Table 3 of the paper), the median stability margin
(how far a frame can move before the network's linear map changes), the neurons switched from
one step to the next, the greedy return, and each method's share of map mass on the game's
objects where the game has an object table (:mod:`rl_insens.objects`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import runs
from .agents import Agent
from .envs import game_name
from .faithfulness.metrics import object_saliency
from .objects import OBJECTS, observation_mask

BATCH = 32
"""Frames per forward pass: bounds the memory of the margins, whatever the clip's length."""


def _frames(run_dir: Path, meta: dict) -> dict[str, np.ndarray]:
    chunks = [runs.read_npz(run_dir / runs.CHUNKS / name) for name in meta["chunks"]]
    return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]
            if all(key in c for c in chunks)}


def _network_state(agent: Agent, observations: np.ndarray, episodes: np.ndarray) -> dict[str, float]:
    """Active share per layer, median stability margin, neurons switched per step (within an episode)."""
    active: dict[str, list[np.ndarray]] = {}
    margins, switched = [], []
    previous = None
    for start in range(0, len(observations), BATCH):
        x = agent.preprocess(observations[start:start + BATCH])
        view = agent.session(x)
        for layer, state in view.neurons.layers.items():
            active.setdefault(layer, []).append(state.active_fraction.cpu().numpy())
        margins.append(view.stability()[0].cpu().numpy())
        masks = torch.cat([s.active.flatten(1) for s in view.neurons.layers.values()], 1)
        if previous is not None:
            masks = torch.cat([previous, masks])
        switched.append((masks[1:] != masks[:-1]).sum(1).cpu().numpy())
        previous = masks[-1:]
    same_episode = episodes[1:] == episodes[:-1]
    per_step = np.concatenate(switched)[same_episode] if switched else np.array([])
    stats = {f"active_percent/{layer}": 100 * float(np.concatenate(v).mean()) for layer, v in active.items()}
    stats["stability_margin_median"] = float(np.median(np.concatenate(margins)))
    stats["neurons_switched_per_step"] = float(per_step.mean()) if per_step.size else 0.0
    return stats


def _object_masses(game: str, frames: dict[str, np.ndarray], methods: list[str], fresh: np.ndarray) -> dict:
    """Each method's mean share of |map| (newest stacked frame) on the game's objects."""
    if game not in OBJECTS or "ram" not in frames or not fresh.any():
        return {}
    screen_shape = frames["screens"].shape[1:3]
    size = frames["observations"].shape[-1]
    masks = np.stack([observation_mask([obj.box(ram) for obj in OBJECTS[game]], screen_shape, size)
                      for ram in frames["ram"][fresh]])
    return {f"object_mass/{m}": float(object_saliency(frames[f"map_{m}"][fresh, -1].astype(np.float32),
                                                      masks)["mass"].mean())
            for m in methods}


def clip_statistics(run_dir: str | Path, agent: Agent | None = None) -> dict[str, float]:
    """The numbers of one recorded run (see the module's docstring), keyed for a logger.

    ``agent`` saves reading the recorded one back from the run directory; it must be the
    agent that was recorded.
    """
    run_dir = Path(run_dir)
    meta = runs.read_meta(run_dir)
    steps = runs.read_npz(run_dir / runs.STEPS_FILE)
    if not len(steps["t"]):
        raise runs.RunError(f"{run_dir} holds no frames")
    agent = agent or runs.load_agent(run_dir)
    frames = _frames(run_dir, meta)
    episodes = steps["episode"]
    stats = _network_state(agent, frames["observations"], episodes)
    returns = [float(steps["reward"][episodes == e].sum()) for e in np.unique(episodes)]
    stats["greedy_return"] = float(np.mean(returns))
    game = game_name(meta["environment"]["env_id"])
    stats.update(_object_masses(game, frames, meta["methods"], steps["fresh"].astype(bool)))
    return stats
