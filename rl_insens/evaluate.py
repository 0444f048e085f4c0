"""Playing episodes with an agent, greedily, from fixed seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .agents import Agent, make_pong_env


@dataclass
class Episode:
    seed: int
    score: float
    length: int


def play_episodes(agent: Agent, seeds: list[int], progress: bool = True, **env_settings) -> list[Episode]:
    """One greedy episode per seed, in the environment ``make_pong_env(**env_settings)``."""
    env = make_pong_env(**env_settings)
    episodes = []
    try:
        for seed in tqdm(seeds, desc="episodes", unit="ep", disable=not progress):
            obs, _ = env.reset(seed=seed)
            score, length, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
                score, length, done = score + float(reward), length + 1, terminated or truncated
            episodes.append(Episode(seed, score, length))
    finally:
        env.close()
    return episodes


def summary(episodes: list[Episode]) -> dict:
    scores = np.array([e.score for e in episodes])
    return {"mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "min": float(scores.min()), "max": float(scores.max()), "episodes": len(scores),
            "seeds": [e.seed for e in episodes], "scores": scores.tolist()}
