"""Step-through debugging of a policy: step, go back, jump, fork, and look inside at each frame.

The :class:`Inspector` plays and keeps the trajectory, each frame with the environment's
state to come back to (:mod:`rl_insens.env_state`); what the network does at a frame is an
:class:`~rl_insens.frame_inspection.Inspection` (:mod:`rl_insens.frame_inspection`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from .agents import Agent, check_fits, load_agent
from .env_state import capture, check_restorable, restore
from .frame_inspection import Inspection, Intervened, WhatIf, state_change
from .inspection import DEFAULT_METHODS, check_methods, resolve_device


@dataclass
class Snapshot:
    """One frame of the trajectory: what the agent saw, and the state to come back to."""

    observation: np.ndarray
    screen: np.ndarray
    env_state: dict
    score: float
    done: bool
    reward: float = 0.0
    action: int | None = None
    """The action taken from this frame, once taken."""


class Inspector:
    """Play an agent frame by frame, with a history to go back to.

    >>> ins = Inspector("agents/pong_rlnet", seed=0)
    >>> ins.step(10)
    >>> frame = ins.inspection()
    >>> frame.stability, frame.map("insens").shape
    >>> ins.back(3); ins.goto(20); other = ins.fork()
    """

    def __init__(self, agent: Agent | str, env: gym.Env | str | None = None, seed: int = 0,
                 methods=DEFAULT_METHODS, device: str = "auto", make_env=None,
                 max_steps: int | None = None) -> None:
        """``env``: the game as an id (``"BreakoutNoFrameskip-v4"``), or an environment made
        already (without a time limit: the inspector keeps the agent's own); by default the
        agent's own game."""
        if isinstance(agent, (str, Path)):
            agent = load_agent(agent, env=env if isinstance(env, str) else None)
        elif isinstance(env, str):
            agent = agent.with_game(env)
        self.agent = agent.to(resolve_device(device))
        self.methods = check_methods(methods)
        self.max_steps = self.agent.game.max_episode_steps if max_steps is None else max_steps
        """Agent steps after which an episode ends (truncated), as the agent's time limit has it."""
        if make_env is None and not isinstance(env, gym.Env):
            def make_env():
                return self.agent.make_env(render_mode="rgb_array", max_episode_steps=None)

        self.make_env = make_env
        env = make_env() if not isinstance(env, gym.Env) else env
        check_restorable(env)
        check_fits(self.agent, env)
        self.env, self.seed = env, seed
        observation, _ = env.reset(seed=seed)
        self.history = [Snapshot(observation, env.render(), capture(env), 0.0, False)]
        self.t = 0
        self._inspections: dict[int, Inspection] = {}
        self._live = 0  # the history index the environment is at

    @property
    def frame(self) -> Snapshot:
        """The current frame of the trajectory."""
        return self.history[self.t]

    @property
    def done(self) -> bool:
        """Whether the episode ended at the current frame."""
        return self.frame.done

    def inspection(self, t: int | None = None) -> Inspection:
        """What the network does at frame ``t`` (by default the current one), computed once."""
        t = self.t if t is None else t
        if t not in self._inspections:
            snap = self.history[t]
            self._inspections[t] = Inspection(self.agent, snap.observation, snap.screen, self.methods)
        return self._inspections[t]

    def step(self, n: int = 1, action: int | None = None) -> Inspection:
        """Advance ``n`` frames with the greedy action (or ``action``); returns the new frame.

        Going forward along history already played reuses it, unless a different action is
        asked for, which discards the old future.
        """
        for _ in range(n):
            if self.done:
                break
            chosen = self.inspection().action if action is None else int(action)
            if self.t + 1 < len(self.history) and self.frame.action == chosen:
                self.t += 1
                continue
            del self.history[self.t + 1:]
            for t in [t for t in self._inspections if t > self.t]:
                del self._inspections[t]
            if self._live != self.t:
                restore(self.env, self.frame.env_state)
            observation, reward, terminated, truncated, _ = self.env.step(chosen)
            self.frame.action = chosen
            out_of_time = self.max_steps is not None and self.t + 1 >= self.max_steps
            self.history.append(Snapshot(observation, self.env.render(), capture(self.env),
                                         self.frame.score + float(reward),
                                         terminated or truncated or out_of_time, float(reward)))
            self.t += 1
            self._live = self.t
        return self.inspection()

    def back(self, n: int = 1) -> Inspection:
        """Go back ``n`` frames (the emulator state is restored when stepping on from there)."""
        self.t = max(0, self.t - n)
        return self.inspection()

    def goto(self, t: int) -> Inspection:
        """Jump to frame ``t``, playing forward if it has not been reached yet."""
        if t < 0:
            raise ValueError(f"frame index must be non-negative, got {t}")
        if t < len(self.history):
            self.t = t
            return self.inspection()
        self.t = len(self.history) - 1
        return self.step(t - self.t)

    def fork(self) -> Inspector:
        """An independent inspector from the current frame on, with its own environment."""
        if self.make_env is None:
            raise ValueError("fork needs a way to make a second environment: pass make_env=")
        other = copy.copy(self)
        other.env = self.make_env()
        other.env.reset(seed=self.seed)
        other.history = [copy.copy(s) for s in self.history[: self.t + 1]]
        other._inspections = {t: i for t, i in self._inspections.items() if t <= self.t}
        restore(other.env, other.frame.env_state)
        other._live = other.t
        return other

    def what_if(self, edited_observation: np.ndarray) -> WhatIf:
        """The policy's outputs and Insens for an edited copy of the current observation."""
        edited = np.asarray(edited_observation)
        if edited.shape != self.frame.observation.shape:
            raise ValueError(f"edited observation has shape {edited.shape}, "
                             f"expected {self.frame.observation.shape}")
        return WhatIf(self.inspection(), Inspection(self.agent, edited, self.frame.screen, self.methods))

    def intervene(self, noops: int | None = None, **moves) -> Intervened:
        """Move objects of the game in its RAM at this frame and play on with no-ops, next to the
        same no-ops without the edit: ``ins.intervene(ball=(10, -5), player=8)`` moves the ball
        10 px right and 5 up and the player's paddle 8 px along the axis it moves on. The
        trajectory is left as it was (the emulator is forked and put back).
        """
        from .interventions import NOOPS, Move, intervene
        from .objects import objects_of

        game = self.agent.game.game
        table = {o.name: o for o in objects_of(game)}
        edits = []
        for name, shift in moves.items():
            if name not in table:
                raise ValueError(f"{game} has no object {name!r}; its objects: {', '.join(table)}")
            if isinstance(shift, tuple):
                edits += [Move(name, axis, int(p)) for axis, p in zip(("x", "y"), shift, strict=True) if p]
            else:
                edits.append(Move(name, "y" if table[name].y_address is not None else "x", int(shift)))
        restore(self.env, self.frame.env_state)
        self._live = self.t
        outcome = intervene(self.env, game, edits, NOOPS if noops is None else noops)
        edited = Inspection(self.agent, outcome.edited_observation, outcome.edited_screen, self.methods)
        return Intervened(Inspection(self.agent, outcome.observation, outcome.screen, self.methods), edited,
                          outcome.moves, outcome.moved)

    def state_change(self) -> dict[str, dict[str, int]]:
        """Neurons switched on/off from the previous frame to this one, per layer."""
        if self.t == 0:
            return {layer: {"on": 0, "off": 0} for layer in self.inspection().neurons.layers}
        return state_change(self.inspection(self.t - 1), self.inspection())
