"""Greedy episodes of an agent in its game: one, one per seed, or every no-op start.

Playing only: what an episode scored, how long it lasted and whether it finished. Scheduling
many of them is :mod:`rl_insens.evaluation.tasks`'s job, summing them up
:mod:`rl_insens.evaluation.report`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from .. import rollout
from ..agents import Agent
from ..workers import one_thread


@dataclass
class Episode:
    """One played episode: its reset seed, score and length, so that summaries need not replay it."""

    seed: int
    score: float
    length: int
    finished: bool
    """False when the episode was cut off (the environment's time limit or ``max_steps``)."""


def play_episode(agent: Agent, env: gym.Env, seed: int, max_steps: int | None = None,
                 watch: Callable[[torch.Tensor, int], None] | None = None) -> Episode:
    """One greedy episode from ``env.reset(seed=seed)``.

    Args:
        agent: the policy; it takes the greedy action of its network at each step.
        env: the environment to play in, made for ``agent`` (see :meth:`Agent.make_env`).
        seed: the reset seed, which decides the episode.
        max_steps: agent steps after which the episode is cut off; ``None`` for the
            environment's own limit.
        watch: ``watch(x, action)`` sees each step's network input and action, to measure the
            play without playing it again.

    Returns:
        The :class:`Episode`: seed, score, length and whether it finished.
    """
    def act(observation: np.ndarray) -> int:
        x = agent.preprocess(observation)
        with torch.no_grad():
            action = int(agent.network(x).argmax(1)[0])
        if watch is not None:
            watch(x, action)
        return action

    score, length, finished = 0.0, 0, False
    for step in rollout.play(act, env, seed, episodes=1, max_steps=max_steps):
        score, length, finished = step.score + step.reward, step.t + 1, step.terminated
    return Episode(seed, score, length, finished)


def play_episodes(agent: Agent, seeds: list[int], progress: bool = True, max_steps: int | None = None,
                  **env_settings) -> list[Episode]:
    """One greedy episode per seed, in the agent's game.

    One torch thread (see :func:`~rl_insens.workers.one_thread`): a single frame gains nothing
    from more, and a training run on the same cores keeps its speed.

    Args:
        agent: the policy to play.
        seeds: one reset seed per episode.
        progress: show a progress bar.
        max_steps: agent steps after which an episode is cut off.
        **env_settings: changes to the game's settings (``repeat_action_probability=0.25``).

    Returns:
        One :class:`Episode` per seed, in the order of ``seeds``.
    """
    env = agent.make_env(**env_settings)
    try:
        with one_thread():
            return [play_episode(agent, env, seed, max_steps)
                    for seed in tqdm(seeds, desc="episodes", unit="ep", disable=not progress)]
    finally:
        env.close()


def noop_start_seeds(env_id: str, noop_max: int = 30) -> list[int]:
    """The first reset seed giving each no-op start ``1..noop_max`` (``[0]`` when there are none).

    Without sticky actions ALE is deterministic, so a greedy episode depends only on how many
    no-ops ``AtariPreprocessing`` drew at reset (its first draw from the environment's
    generator): these seeds play every episode the setting can produce, and their mean is the
    policy's exact expected return there, where a few random seeds may repeat some starts and
    miss others.
    """
    import ale_py

    if noop_max == 0:
        return [0]
    gym.register_envs(ale_py)
    env = gym.make(env_id)
    first_seed: dict[int, int] = {}
    seed = 0
    while len(first_seed) < noop_max:
        env.reset(seed=seed)
        first_seed.setdefault(int(env.unwrapped.np_random.integers(1, noop_max + 1)), seed)
        seed += 1
    env.close()
    return [first_seed[n] for n in sorted(first_seed)]
