"""The environment side of the checks: frames from the agent's own play (with where the game's
objects are, and what moving them does), and closed-loop play on noised frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import rollout
from ..attribution import attribute
from ..interventions import intervene, standard_moves
from ..objects import OBJECTS, objects_of, observation_mask
from .metrics import FRACTION, SIGMA, with_noise


@dataclass
class Sample:
    """Frames the agent saw, and what the game's RAM says about them."""

    x: torch.Tensor
    """Network inputs, ``[n, frames, 84, 84]``."""
    game: str
    object_masks: dict[str, np.ndarray] = field(default_factory=dict)
    """Per object: ``[n, 84, 84]`` masks of its box on the newest stacked frame."""
    interventions: list[dict] = field(default_factory=list)
    """Each: the frame, the move, and the change it made in the policy's outputs."""
    dropped_interventions: int = 0
    """Moves that did not move the object on the screen (the game undid them, or it was hidden)."""

    @property
    def has_objects(self) -> bool:
        return bool(self.object_masks)


@torch.no_grad()
def _outputs(agent, observation) -> tuple[torch.Tensor, float | None]:
    x = agent.preprocess(observation)
    value = None if agent.value_network is None else float(agent.value_network(x)[0, 0])
    return agent.network(x)[0], value


def sample_frames(agent, n: int, seed: int = 0, every: int = 5, progress: bool = True,
                  interventions: bool = False) -> Sample:
    """``n`` observations from the agent's own greedy play, every ``every``-th step; where the game
    has an object table, its objects' boxes and (with ``interventions``) the standard moves of
    :func:`~rl_insens.interventions.standard_moves` played from each frame."""
    from tqdm import tqdm

    env = agent.make_env(max_episode_steps=None)  # interventions step the game; sampling stops itself
    game = agent.game.game
    objects = objects_of(game) if game in OBJECTS else ()
    frames, masks = [], {o.name: [] for o in objects}
    sample = Sample(torch.empty(0), game)
    moves = standard_moves(game) if interventions and objects else []
    bar = tqdm(total=n, desc="frames", disable=not progress)
    def at_sampled_frames(env, observation, t: int) -> None:
        """Object masks and interventions need the game as the agent sees the frame."""
        if t % every or len(frames) >= n:
            return
        ram, screen = env.unwrapped.ale.getRAM(), env.unwrapped.ale.getScreenRGB()
        for obj in objects:
            masks[obj.name].append(observation_mask([obj.box(ram)], screen.shape[:2]))
        for move in moves:
            _record_intervention(sample, agent, env, game, move, len(frames))

    try:
        for step in rollout.play(agent.act, env, seed, episodes=None, before_step=at_sampled_frames):
            if step.t % every == 0:
                frames.append(agent.preprocess(step.observation)[0])
                bar.update(1)
                if len(frames) == n:
                    break
    finally:
        env.close()
        bar.close()
    sample.x = torch.stack(frames)
    sample.object_masks = {name: np.stack(m) for name, m in masks.items()}
    return sample


def _record_intervention(sample: Sample, agent, env, game: str, move, frame: int) -> None:
    outcome = intervene(env, game, [move])
    if not outcome.moved:
        sample.dropped_interventions += 1
        return
    (logits, value), (edited, edited_value) = _outputs(agent, outcome.observation), \
        _outputs(agent, outcome.edited_observation)
    sample.interventions.append({
        "frame": frame, "object": move.object, "axis": move.axis, "pixels": move.pixels,
        "logit_change": float((edited - logits).norm()),
        "value_change": None if value is None else abs(edited_value - value)})


@torch.no_grad()
def closed_loop(agent, method: str | None, choice: str, env_seed: int, fraction: float = FRACTION,
                sigma: float = SIGMA, max_steps: int = 1000) -> dict:
    """Play up to ``max_steps`` greedy steps of one episode, each frame noised as ``choice`` says
    (ranked by ``method``'s map of the clean frame); the return, and how often the action taken
    is the one the clean frame would have given."""
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; choose one of {', '.join(CHOICES)}")
    network = agent.network
    generator = torch.Generator().manual_seed(env_seed)
    env = agent.make_env()
    agreed = []

    def act(observation: np.ndarray) -> int:
        x = agent.preprocess(observation)
        clean_action = network(x).argmax(1)
        action = clean_action
        if choice != "clean":
            flat = x.flatten(1)
            k = int(round(fraction * flat.shape[1]))
            noise = torch.randn(flat.shape, generator=generator) * sigma
            if choice == "random":
                chosen = torch.randperm(flat.shape[1], generator=generator)[None, :k]
            else:
                with torch.enable_grad():
                    order = attribute(network, x, method, target=clean_action).flatten(1).abs().argsort(1)
                chosen = order[:, :k] if choice == "lowest" else order[:, -k:]
            action = network(with_noise(flat, chosen, noise).view_as(x)).argmax(1)
        agreed.append(bool(action == clean_action))
        return int(action)

    score, length = 0.0, 0
    try:
        for step in rollout.play(act, env, env_seed, episodes=1, max_steps=max_steps):
            score, length = step.score + step.reward, step.t + 1
    finally:
        env.close()
    return {"return": score, "length": length, "agreement": sum(agreed) / max(length, 1)}


CHOICES = ("clean", "lowest", "highest", "random")
"""Closed-loop conditions: no noise, or noise on the least / most relevant or random inputs."""
