"""Greedy play as a stream of steps: the one play loop that recording, comparison, evaluation
and the faithfulness sample read.

Episode ``i`` starts from ``env.reset(seed=seed + i)``, so any step can be reached again from
the seed and the actions taken (the viewer's interventions rely on it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class Step:
    """One step of play: what the agent saw and did, and what came of it."""

    episode: int
    t: int
    """Steps into the episode."""
    observation: np.ndarray
    """What the agent acted on."""
    action: int
    reward: float
    """The reward the action brought."""
    score: float
    """The episode's return before this step's reward."""
    terminated: bool
    truncated: bool
    """The environment's time limit, or the step limit asked for, ended the episode here."""
    screen: np.ndarray | None = None
    """The colour screen the agent acted on, when asked for (an ``rgb_array`` environment)."""
    ram: np.ndarray | None = None
    """The console's RAM the agent acted on, when asked for (ALE games)."""

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def play(act: Callable[[np.ndarray], int], env: gym.Env, seed: int = 0,
         episodes: int | Iterable[int] | None = 1, max_steps: int | None = None, screens: bool = False,
         ram: bool = False, before_step: Callable[[gym.Env, np.ndarray, int], None] | None = None
         ) -> Iterator[Step]:
    """Play ``episodes`` episodes (a count, the episode numbers, or None: on until the caller
    stops) choosing actions by ``act(observation)``, each cut at ``max_steps``; a
    :class:`Step` per step.

    ``before_step(env, observation, t)`` runs before each action, on the game as the agent sees
    it: for work that forks the emulator there. It must leave the environment as it found it.
    """
    ale = getattr(env.unwrapped, "ale", None) if ram else None
    if ram and ale is None:
        raise ValueError("this environment has no console RAM to record")
    if episodes is None:
        episodes = itertools.count()
    for episode in range(episodes) if isinstance(episodes, int) else episodes:
        observation, _ = env.reset(seed=seed + episode)
        score, t, done = 0.0, 0, False
        while not done:
            screen = env.render() if screens else None
            memory = ale.getRAM().copy() if ram else None
            if before_step is not None:
                before_step(env, observation, t)
            action = int(act(observation))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            truncated = bool(truncated) or (max_steps is not None and t + 1 >= max_steps)
            yield Step(episode, t, observation, action, float(reward), score, bool(terminated), truncated,
                       screen, memory)
            observation, score, t = next_observation, score + float(reward), t + 1
            done = terminated or truncated
