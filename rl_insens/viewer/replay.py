"""A recorded run played again, so that the emulator can be forked at any of its frames.

A run directory keeps screens, observations and actions, not the emulator. Its episodes are
played again from the recorded seed with the recorded actions (no policy is asked), and each
frame reached is checked against the recorded observation: a run whose frames cannot be
reproduced (states taken from another agent's play, as in ``rl-insens compare``) is refused,
never shown with interventions on some other state. Emulator states are kept every
``CHECKPOINT_EVERY`` steps, so going back costs little.
"""

from __future__ import annotations

import threading

import gymnasium as gym
import numpy as np
import torch

from .. import render
from ..env_state import capture, restore
from ..envs import AtariSettings, make_env
from ..interventions import NOOPS, intervene, standard_moves

CHECKPOINT_EVERY = 100


class Replay:
    """The episodes of a run (``steps``: its per-step table, ``meta``: its meta file), replayed."""

    def __init__(self, steps: dict[str, np.ndarray], meta: dict, observation_at) -> None:
        if "seed" not in meta or "environment" not in meta:
            raise ValueError("this run does not say which game and seed it was played with")
        self.steps, self.seed = steps, int(meta["seed"])
        self.settings = AtariSettings.from_dict(meta["environment"])
        self.observation_at = observation_at  # global frame index -> the recorded observation
        self.env: gym.Env | None = None
        self.where: tuple[int, int] | None = None  # (episode, step) the emulator is at
        self.observation: np.ndarray | None = None
        self.checkpoints: dict[tuple[int, int], tuple[dict, np.ndarray]] = {}
        self.lock = threading.Lock()

    @property
    def game(self) -> str:
        return self.settings.game

    def goto(self, t: int) -> gym.Env:
        """The emulator at recorded frame ``t``, checked against the recording."""
        episode, step = int(self.steps["episode"][t]), int(self.steps["t"][t])
        first = t - step
        if first < 0 or int(self.steps["episode"][first]) != episode or int(self.steps["t"][first]) != 0:
            raise ValueError(f"frame {t}: the run does not hold its episode from the start")
        if self.env is None:
            self.env = make_env(self.settings, render_mode="rgb_array")
        here = self.where
        if here is None or here[0] != episode or here[1] > step:
            start = max((k for (e, k) in self.checkpoints if e == episode and k <= step), default=None)
            if start is None:
                self.observation, _ = self.env.reset(seed=self.seed + episode)
                self.where = (episode, 0)
            else:
                state, self.observation = self.checkpoints[(episode, start)]
                restore(self.env, state)
                self.where = (episode, start)
        while self.where[1] < step:
            k = self.where[1]
            self.observation, *_ = self.env.step(int(self.steps["action"][first + k]))
            self.where = (episode, k + 1)
            if (k + 1) % CHECKPOINT_EVERY == 0:
                self.checkpoints[(episode, k + 1)] = (capture(self.env), self.observation)
        if not np.array_equal(self.observation, self.observation_at(t)):
            self.where = None
            raise ValueError(
                f"frame {t} cannot be played again from the run's seed and actions (its states came from "
                "another agent's play, or the game was not reproducible): no interventions for this run")
        return self.env


def interventions(replay: Replay, t: int, agent, pixels=(-10, -5, 5, 10)) -> dict:
    """Each object of the game moved in RAM at frame ``t``, then ``NOOPS`` no-ops with and
    without the move: the change in the policy's logits and value, whether the move showed on
    the screen, and the edited screen with its Insens map (``picture``, an RGB array)."""
    with replay.lock:
        env = replay.goto(t)
        outcomes = [intervene(env, replay.game, [move]) for move in standard_moves(replay.game, pixels)]
    if not outcomes:
        raise ValueError(f"{replay.game} has no object that can be moved in RAM")
    x = agent.preprocess(np.stack([outcomes[0].observation] + [o.edited_observation for o in outcomes]))
    view = agent.session(x)
    logits = view.logits
    with torch.no_grad():
        values = agent.value_network(x)[:, 0] if agent.value_network is not None else None
    maps = view.insens()[:, -1].cpu().numpy()  # the newest stacked frame
    results = []
    for k, outcome in enumerate(outcomes, start=1):
        move = outcome.moves[0]
        screen = outcome.edited_screen
        values_on_screen = render.to_screen(maps[k], screen.shape)
        picture = render.zoom(render.overlay(render.grey(screen), values_on_screen,
                                             render.robust_scale(values_on_screen)))
        results.append({
            "object": move.object, "axis": move.axis, "pixels": move.pixels, "moved": outcome.moved,
            "logit_change": float((logits[k] - logits[0]).norm()),
            "value_change": None if values is None else float((values[k] - values[0]).abs()),
            "action": agent.action_meanings[int(logits[k].argmax())],
            "picture": picture,
        })
    return {"t": t, "noops": NOOPS, "game": replay.game,
            "unedited_action": agent.action_meanings[int(logits[0].argmax())],
            "dropped": sum(not r["moved"] for r in results), "moves": results}

