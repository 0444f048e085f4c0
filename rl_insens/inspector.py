"""Step-through debugging of a policy: step, go back, jump, fork, and look inside at each frame.

At every frame the whole network *is* one linear map (its switched projection), so the
inspector can show any neuron's projection, how far the frame is from the nearest switching
hyperplane (the stability margin), and which neurons switched between frames.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .agents import Agent, check_fits, load_agent
from .attribution import attribute
from .engine import SwitchedProjection
from .inspection import DEFAULT_METHODS, check_methods, resolve_device


# ----- the environment's state, so that going back restores it exactly ------------------------
def _stateless_wrappers() -> tuple[type, ...]:
    """Wrappers whose behaviour depends on nothing that changes from step to step: gymnasium's
    checks and reshaping, and SB3's and CleanRL's Atari wrappers but the life counter (their
    frame-skip buffer is refilled within each step)."""
    from stable_baselines3.common import atari_wrappers as sb3

    from .envs import ResizeThenGray

    return (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker, gym.wrappers.ReshapeObservation,
            sb3.AtariWrapper, sb3.NoopResetEnv, sb3.MaxAndSkipEnv, sb3.FireResetEnv, sb3.WarpFrame,
            sb3.ClipRewardEnv, ResizeThenGray)


def _episodic_life():
    from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv

    return EpisodicLifeEnv


def _wrappers(env: gym.Env):
    while isinstance(env, gym.Wrapper):
        yield env
        env = env.env


def check_restorable(env: gym.Env) -> None:
    """Refuse, by name, an environment whose state the Inspector could not put back exactly.

    It knows the emulator (``ale.cloneState``/``restoreState``), the frames kept by
    ``AtariPreprocessing`` and ``FrameStackObservation``, SB3's life counter, and the wrappers
    that keep nothing (``_stateless_wrappers``); it keeps time itself, so a
    ``TimeLimit`` (whose step count Gymnasium keeps private) is refused too.
    """
    if not hasattr(env.unwrapped, "ale"):
        raise ValueError(f"the Inspector needs an ALE (Atari) environment, "
                         f"got {type(env.unwrapped).__name__}")
    for wrapper in _wrappers(env):
        if isinstance(wrapper, gym.wrappers.TimeLimit):
            raise ValueError("the Inspector counts the steps itself: make the environment without a "
                             "TimeLimit (max_episode_steps=None) and pass max_steps= to the Inspector")
        if not isinstance(wrapper, (gym.wrappers.AtariPreprocessing, gym.wrappers.FrameStackObservation,
                                    _episodic_life(), *_stateless_wrappers())):
            raise ValueError(f"the Inspector cannot go back in an environment wrapped in "
                             f"{type(wrapper).__name__}: it does not know what state that wrapper keeps")


def capture(env: gym.Env) -> dict:
    """Everything that decides the next observations: the emulator and the wrappers' frames."""
    state = {"ale": env.unwrapped.ale.cloneState(include_rng=True)}
    for wrapper in _wrappers(env):
        if isinstance(wrapper, gym.wrappers.FrameStackObservation):
            state["frames"] = [frame.copy() for frame in wrapper.obs_queue]
        elif isinstance(wrapper, gym.wrappers.AtariPreprocessing):
            state["buffers"] = [b.copy() for b in wrapper.obs_buffer]
            state["lives"], state["game_over"] = wrapper.lives, wrapper.game_over
        elif isinstance(wrapper, _episodic_life()):
            state["episodic_life"] = wrapper.lives, wrapper.was_real_done
    return state


def restore(env: gym.Env, state: dict) -> None:
    env.unwrapped.ale.restoreState(state["ale"])
    for wrapper in _wrappers(env):
        if isinstance(wrapper, gym.wrappers.FrameStackObservation):
            wrapper.obs_queue.clear()
            wrapper.obs_queue.extend(frame.copy() for frame in state["frames"])
        elif isinstance(wrapper, gym.wrappers.AtariPreprocessing):
            for buffer, saved in zip(wrapper.obs_buffer, state["buffers"], strict=True):
                buffer[...] = saved
            wrapper.lives, wrapper.game_over = state["lives"], state["game_over"]
        elif isinstance(wrapper, _episodic_life()):
            wrapper.lives, wrapper.was_real_done = state["episodic_life"]


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


# ----- what the network did at one frame ---------------------------------------------------------
@dataclass
class Inspection:
    """The network at one observation; attribution maps and projections computed on demand."""

    agent: Agent
    observation: np.ndarray
    screen: np.ndarray
    methods: tuple[str, ...]
    _maps: dict = field(default_factory=dict, repr=False)

    @cached_property
    def x(self) -> torch.Tensor:
        return self.agent.preprocess(self.observation)

    @cached_property
    def view(self):
        """The engine's answers at this frame, all from one forward pass (:class:`SwitchedView`)."""
        return self.agent.session(self.x)

    @cached_property
    def logits(self) -> np.ndarray:
        return self.view.logits[0].cpu().numpy()

    @property
    def action_probs(self) -> np.ndarray:
        """As the agent's greedy play gives them (see :meth:`Agent.action_probs`)."""
        return self.agent.action_probs(torch.as_tensor(self.logits)[None])[0].numpy()

    @property
    def action(self) -> int:
        return int(np.argmax(self.logits))

    @cached_property
    def value(self) -> float | None:
        if self.agent.value_network is None:
            return None
        with torch.no_grad():
            return float(self.agent.value_network(self.x)[0, 0])

    def map(self, method: str) -> np.ndarray:
        """Attribution map of ``method`` (cached), the observation's shape."""
        if method not in self._maps:
            check_methods([method])
            self._maps[method] = attribute(self.agent.session, self.x, method)[0].cpu().numpy()
        return self._maps[method]

    @property
    def maps(self) -> dict[str, np.ndarray]:
        return {m: self.map(m) for m in self.methods}

    @cached_property
    def neurons(self):
        """Per-layer activity and active mask (:class:`~rl_insens.engine.NeuronState`)."""
        return self.view.neurons

    def projection(self, layer: str, index: int) -> SwitchedProjection:
        """Neuron ``index`` of ``layer`` as a linear map of the frames: ŵ (one image per stacked
        frame), b̂, v and the centre ĉ."""
        return self.view.projection(layer, [index])

    @cached_property
    def stability(self) -> tuple[float, tuple[str, int]]:
        """(margin, (layer, index)): distance to the nearest switching hyperplane, and its neuron."""
        margins, nearest = self.view.stability()
        return float(margins[0]), nearest[0]


def state_change(before: Inspection, after: Inspection) -> dict[str, dict[str, int]]:
    """Neurons that switched on and off between two frames, per hidden layer."""
    change = {}
    for layer, state in after.neurons.layers.items():
        was, now = before.neurons.layers[layer].active, state.active
        change[layer] = {"on": int((now & ~was).sum()), "off": int((was & ~now).sum())}
    return change


@dataclass
class WhatIf:
    """The policy on the original frame and on an edited one."""

    original: Inspection
    edited: Inspection

    @cached_property
    def insens(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.original.view.insens()[0].cpu().numpy(), self.edited.view.insens()[0].cpu().numpy())


@dataclass
class Intervened(WhatIf):
    """The policy ``NOOPS`` steps after an edit of the game's RAM (``edited``) and without it
    (``original``); ``moved`` says whether every edited object moved on the screen."""

    moves: tuple = ()
    moved: bool = False

    @property
    def logit_change(self) -> float:
        """L2 distance between the policy's outputs with and without the edit (Atrey et al.)."""
        return float(np.linalg.norm(self.edited.logits - self.original.logits))

    @property
    def value_change(self) -> float | None:
        if self.original.value is None:
            return None
        return abs(self.edited.value - self.original.value)


def occlude(observation: np.ndarray, rows: slice, cols: slice, value: int = 0) -> np.ndarray:
    """A copy of a stacked observation with a rectangle set to ``value`` in every frame."""
    edited = observation.copy()
    edited[..., rows, cols] = value
    return edited


def add_noise(observation: np.ndarray, rows: slice, cols: slice, sigma: float = 30.0, seed: int = 0):
    """A copy with Gaussian noise (in grey levels) added inside a rectangle."""
    rng = np.random.default_rng(seed)
    edited = observation.astype(np.float32)
    edited[..., rows, cols] += rng.normal(0, sigma, edited[..., rows, cols].shape)
    return np.clip(edited, 0, 255).astype(observation.dtype)


# ----- the inspector ---------------------------------------------------------------------------------
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
        return self.history[self.t]

    @property
    def done(self) -> bool:
        return self.frame.done

    def inspection(self, t: int | None = None) -> Inspection:
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
