"""Agents ready for inspection, whatever trained them, each with the game it was trained in.

:func:`load_agent` reads an rl-insens agent directory, a stable-baselines3 zip (alone or in
an rl-baselines3-zoo run folder) or a CleanRL checkpoint, and gives an :class:`Agent`: the
policy as a plain network the engine accepts, plus the game and preprocessing it was trained
with. The game comes, in this order, from what the caller passes, from the zoo's files next
to a zip, or from the agent's own model card; an agent whose game nobody says can be read
but not played, and playing it asks for ``env=`` / ``--env`` rather than guess.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import gymnasium as gym
import torch
from torch import nn

from ..envs import AtariSettings, GameError, action_meanings, check_env_id, make_env, settings_for_outputs


@dataclass
class Agent:
    """A policy ready for inspection.

    ``network`` maps stacked float frames in [0, 1] (``[B, 4, 84, 84]``) to one score per action
    (policy logits, or Q-values for DQN agents) and is a plain chain the engine accepts. The
    division by 255 happens in :meth:`preprocess`, outside the network, so that attributions are
    with respect to the frames the policy sees.
    """

    network: nn.Module
    action_meanings: list[str]
    kind: str
    value_network: nn.Module | None = None
    card: dict | None = None
    scale: float = 1 / 255
    settings: AtariSettings | None = None
    """The game and its preprocessing; ``None`` when no source said which game it was."""

    @cached_property
    def session(self):
        """The engine's session on the policy network (:class:`~rl_insens.engine.SwitchedModel`):
        the network read once, and each batch's forward pass shared by every question about it."""
        from ..engine import SwitchedModel

        return SwitchedModel(self.network)

    @property
    def source(self) -> str:
        return str((self.card or {}).get("source", "this agent"))

    @property
    def n_actions(self) -> int:
        return len(self.action_meanings)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return tuple((self.card or {}).get("observation_shape", (4, 84, 84)))

    @property
    def game(self) -> AtariSettings:
        """The agent's game, or a clear error that says how to name it."""
        if self.settings is None:
            raise GameError(f"no game is known for {self.source}: pass the environment it was trained in "
                            "(--env ENV_ID on the command line, env= in Python), e.g. PongNoFrameskip-v4")
        return self.settings

    def make_env(self, render_mode: str | None = None, **overrides) -> gym.Env:
        """The agent's own game, preprocessed as in its training (``overrides`` change settings,
        e.g. ``repeat_action_probability=0.25``)."""
        env = make_env(self.game, render_mode=render_mode, **overrides)
        check_fits(self, env)
        return env

    def with_game(self, env: str | AtariSettings, **settings) -> Agent:
        """This agent set to play ``env`` (an id keeps the preprocessing it was trained with)."""
        if isinstance(env, str):
            fmt = (self.card or {}).get("format", "sb3")
            base = self.settings or AtariSettings(env, preprocessing=DEFAULT_PREPROCESSING[fmt])
            env = dataclasses.replace(base, env_id=check_env_id(env))
        if settings:
            env = dataclasses.replace(env, **settings)
        env = settings_for_outputs(env, self.n_actions, self.source)
        if env.observation_shape != self.observation_shape:
            raise GameError(f"{self.source} takes observations of shape {list(self.observation_shape)}; "
                            f"{env.env_id} as set gives {list(env.observation_shape)}")
        meanings = action_meanings(env)
        return dataclasses.replace(self, settings=env, action_meanings=meanings,
                                   card={**(self.card or {}), "environment": env.as_dict()})

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device) -> Agent:
        self.network.to(device)
        if self.value_network is not None:
            self.value_network.to(device)
        return self

    def preprocess(self, observations) -> torch.Tensor:
        """uint8 observations as the environment gives them to floats for the network."""
        x = torch.as_tensor(observations, device=self.device)
        if x.dim() == len(self.observation_shape):
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.observation_shape:
            raise ValueError(f"observation of shape {list(x.shape[1:])} does not fit this agent, "
                             f"which takes {list(self.observation_shape)}")
        return x.float() * self.scale

    def action_probs(self, scores: torch.Tensor) -> torch.Tensor:
        """The probability the agent's greedy play gives each action, from the network's scores
        ``[B, n_actions]``: the policy's softmax for actor-critic logits; for Q-values, which
        are not log-probabilities, 1 on the greedy action and 0 elsewhere."""
        if self.kind == "actor-critic":
            return scores.softmax(1)
        return torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).to(scores.dtype)

    @torch.no_grad()
    def act(self, observation) -> int:
        """Greedy action for ONE stacked observation as the environment returns it."""
        x = torch.as_tensor(observation)
        if x.dim() != len(self.observation_shape):
            raise ValueError(f"act takes one observation of shape {list(self.observation_shape)}, got "
                             f"shape {list(x.shape)}; for a batch use agent.network(agent.preprocess(batch))")
        x = self.preprocess(x)
        if not torch.isfinite(x).all():
            raise ValueError("the observation contains NaN or infinite values")
        return int(self.network(x).argmax(1)[0])


DEFAULT_PREPROCESSING = {"rl-insens": "gymnasium", "sb3": "sb3", "cleanrl": "cleanrl"}
"""Whose observation pipeline an agent of each format was trained with, unless it says."""


def check_fits(agent: Agent, env: gym.Env) -> None:
    """Refuse, before any step, an environment whose observations or actions are not the agent's."""
    shape = tuple(env.observation_space.shape)
    if shape != agent.observation_shape:
        raise GameError(f"the environment's observations have shape {list(shape)}; "
                        f"{agent.source} takes {list(agent.observation_shape)}")
    n = int(env.action_space.n)
    if n != agent.n_actions:
        raise GameError(f"the environment has {n} actions; {agent.source} has {agent.n_actions} outputs")


def load_agent(path: str | Path, env: str | AtariSettings | None = None, **settings) -> Agent:
    """Load an agent and the game it plays, without running code from its files.

    Args:
        path: an rl-insens agent directory, a stable-baselines3 ``.zip`` (PPO or A2C, DQN,
            QR-DQN with Atari CNN policies; in an rl-baselines3-zoo run folder or alone) or a
            CleanRL ``.cleanrl_model``.
        env: the game, overriding what the agent's files say: an id such as
            ``BreakoutNoFrameskip-v4`` or ``ALE/Breakout-v5``, or whole :class:`AtariSettings`.
            Without it the game comes from the zoo's files next to a zip, or the model card;
            failing both, the agent loads without one (see :attr:`Agent.game`).
        **settings: single preprocessing fields to change (``repeat_action_probability=0.25``).

    Returns:
        The :class:`Agent`: its network, value network where it has one, action names, game.
    """
    from . import cleanrl, native, sb3

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no agent at {path}")
    if path.is_dir():
        agent = native.load(path)
    elif path.suffix == ".cleanrl_model":
        agent = cleanrl.load(path)
    else:
        agent = sb3.load(path, read_zoo=env is None)
    if env is not None:
        return agent.with_game(env, **settings)
    if agent.settings is not None:
        return agent.with_game(agent.settings, **settings)
    if settings:
        raise GameError(f"no game is known for {agent.source} to apply {sorted(settings)} to: pass env=")
    return agent


def generic_meanings(n: int) -> list[str]:
    """Placeholder action names for an agent whose game is not known yet."""
    return [f"action {i}" for i in range(n)]


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of ``module``, so that an agent never shares weights with the policy it was read from."""
    import copy

    return copy.deepcopy(module)


from .native import RLNetExtractor, save_agent, sha256_of  # noqa: E402  (they build on Agent)

__all__ = ["Agent", "AtariSettings", "RLNetExtractor", "check_fits", "load_agent", "save_agent", "sha256_of"]
