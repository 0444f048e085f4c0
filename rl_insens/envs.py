"""Any ALE game, preprocessed the way the agent playing it was trained.

An agent sees the game through its trainer's preprocessing, and the same screen preprocessed
another way is, to its network, a different input. So the settings here name the trainer's
pipeline, and each pipeline is built from that trainer's own wrappers where it has them:

- ``sb3``: stable-baselines3's ``AtariWrapper`` (no-op starts, frame skip with a max over the
  last two frames, FIRE on reset where the game has it, 84x84 grayscale) and a zero-padded
  stack of frames, as ``make_atari_env`` + ``VecFrameStack`` + ``VecTransposeImage`` give it.
- ``cleanrl``: CleanRL's Atari scripts: SB3's reset, skip and FIRE wrappers, then the colour
  screen resized to 84x84 and made gray (gymnasium 0.29's wrappers, which CleanRL pins), and a
  stack padded with the first frame.
- ``gymnasium``: gymnasium's ``AtariPreprocessing`` (the emulator's own grayscale) and a stack
  padded with the first frame: how rl-insens trains its agents.

Whole games are scored: rewards are never clipped, and a lost life ends the episode only
when ``terminal_on_life_loss`` asks for it.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace
from functools import cache

import cv2
import gymnasium as gym
import numpy as np

PREPROCESSING = ("sb3", "cleanrl", "gymnasium")
FULL_ACTION_SET = 18
"""Every ALE game accepts all 18 joystick actions; most have a smaller minimal set."""


class GameError(ValueError):
    """A game id or setting that cannot be played: a user's mistake, said in one line."""


@dataclass(frozen=True)
class AtariSettings:
    """The game and how its screens become the observations an agent was trained on."""

    env_id: str
    """A Gymnasium ALE id: ``ALE/Breakout-v5`` or ``BreakoutNoFrameskip-v4`` and the like."""
    preprocessing: str = "sb3"
    """Whose wrappers make the observations: one of ``PREPROCESSING``."""
    frame_skip: int = 4
    """The agent acts on every 4th frame, repeating its action; it sees the max of the last two."""
    screen_size: int = 84
    grayscale: bool = True
    frame_stack: int = 4
    noop_max: int = 30
    """A random number (1..noop_max) of no-ops at reset, so that episodes from one start differ."""
    repeat_action_probability: float | None = None
    """Sticky actions; ``None`` takes the id's own (0 for v4 ids, 0.25 for v5)."""
    full_action_space: bool = False
    """All 18 actions, or the game's minimal set (see :func:`settings_for_outputs`)."""
    terminal_on_life_loss: bool = False
    max_episode_steps: int | None = 27_000
    """Agent steps (108k frames), the usual cap on an Atari episode."""

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING:
            raise GameError(f"unknown preprocessing {self.preprocessing!r}; "
                                    f"choose from {', '.join(PREPROCESSING)}")
        if not self.grayscale:
            raise GameError("only grayscale observations are supported")

    @classmethod
    def from_dict(cls, data: dict) -> AtariSettings:
        """Settings from a model card or run file; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def game(self) -> str:
        """The game's name as ALE spells it: ``Breakout`` for both id forms."""
        return game_name(self.env_id)

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return (self.frame_stack, self.screen_size, self.screen_size)

    @property
    def sticky(self) -> float:
        """The repeat probability this environment actually uses."""
        if self.repeat_action_probability is not None:
            return float(self.repeat_action_probability)
        return float(gym.spec(check_env_id(self.env_id)).kwargs.get("repeat_action_probability", 0.0))


def _register() -> None:
    import ale_py

    gym.register_envs(ale_py)


@cache
def ale_ids() -> tuple[str, ...]:
    """Every environment id that Gymnasium's registry has from ALE, sorted (looked up once)."""
    _register()
    return tuple(sorted(k for k, spec in gym.registry.items() if "ale_py" in str(spec.entry_point)))


def check_env_id(env_id: str) -> str:
    """``env_id`` if Gymnasium knows it as an ALE game, else an error listing close matches."""
    if env_id in ale_ids():
        return env_id
    close = difflib.get_close_matches(env_id, ale_ids(), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (ALE ids look like ALE/Breakout-v5 " \
        "or BreakoutNoFrameskip-v4)"
    raise GameError(f"unknown Atari environment {env_id!r}{hint}")


def game_name(env_id: str) -> str:
    """``Breakout`` for ``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4`` and the other forms."""
    name = check_env_id(env_id).removeprefix("ALE/").rsplit("-v", 1)[0]
    return name.removesuffix("NoFrameskip").removesuffix("Deterministic")


@cache
def minimal_action_count(env_id: str) -> int:
    """How many actions the game's minimal action set has."""
    env = gym.make(check_env_id(env_id), full_action_space=False)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


def action_meanings(settings: AtariSettings) -> list[str]:
    """ALE's names for the actions the agent's outputs stand for, in output order."""
    env = gym.make(check_env_id(settings.env_id), full_action_space=settings.full_action_space)
    try:
        return list(env.unwrapped.get_action_meanings())
    finally:
        env.close()


def settings_for_outputs(settings: AtariSettings, n_outputs: int, source: str = "the agent") -> AtariSettings:
    """The action set that fits a network with ``n_outputs`` actions, checked before any play.

    As many outputs as the game's minimal set: that set; 18: the full set. Anything else
    cannot be mapped onto the game's actions, and guessing would show a policy doing what it
    never chose.
    """
    minimal = minimal_action_count(settings.env_id)
    if n_outputs == minimal:
        return replace(settings, full_action_space=False)
    if n_outputs == FULL_ACTION_SET:
        return replace(settings, full_action_space=True)
    raise GameError(
        f"{source} has {n_outputs} actions, but {settings.env_id} has {minimal} (its minimal action set) "
        f"or {FULL_ACTION_SET} (the full set): it was not trained on this game")


def make_env(env_id: str | AtariSettings, render_mode: str | None = None, **settings) -> gym.Env:
    """Any ALE game as an agent sees it.

    Args:
        env_id: a Gymnasium ALE id, or whole :class:`AtariSettings`.
        render_mode: ``"rgb_array"`` gives the colour game screen through ``env.render()``.
        **settings: fields of :class:`AtariSettings` to override (``preprocessing="cleanrl"``,
            ``repeat_action_probability=0.25``, ...).

    Returns:
        A Gymnasium environment with ``uint8`` observations ``(frame_stack, 84, 84)``,
        preprocessed by the trainer's own wrappers that ``preprocessing`` names.
    """
    cfg = env_id if isinstance(env_id, AtariSettings) else AtariSettings(env_id)
    cfg = replace(cfg, **settings) if settings else cfg
    check_env_id(cfg.env_id)
    env = gym.make(
        cfg.env_id,
        frameskip=1,  # the preprocessing skips frames (and max-pools the last two)
        repeat_action_probability=cfg.sticky,
        full_action_space=cfg.full_action_space,
        max_episode_steps=None if cfg.max_episode_steps is None else cfg.max_episode_steps * cfg.frame_skip,
        render_mode=render_mode,
    )
    return PIPELINES[cfg.preprocessing](env, cfg)


def _sb3(env: gym.Env, cfg: AtariSettings) -> gym.Env:
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    env = AtariWrapper(env, noop_max=cfg.noop_max, frame_skip=cfg.frame_skip, screen_size=cfg.screen_size,
                       terminal_on_life_loss=cfg.terminal_on_life_loss, clip_reward=False)
    env = gym.wrappers.ReshapeObservation(env, (cfg.screen_size, cfg.screen_size))  # WarpFrame's HxWx1
    return gym.wrappers.FrameStackObservation(env, cfg.frame_stack, padding_type="zero")  # VecFrameStack


class ResizeThenGray(gym.ObservationWrapper):
    """CleanRL's ``ResizeObservation`` then ``GrayScaleObservation`` (gymnasium 0.29): the colour
    screen resized with area averaging, then OpenCV's RGB-to-gray."""

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        small = cv2.resize(observation, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def _cleanrl(env: gym.Env, cfg: AtariSettings) -> gym.Env:
    from stable_baselines3.common.atari_wrappers import (
        EpisodicLifeEnv,
        FireResetEnv,
        MaxAndSkipEnv,
        NoopResetEnv,
    )

    if cfg.noop_max > 0:
        env = NoopResetEnv(env, noop_max=cfg.noop_max)
    env = MaxAndSkipEnv(env, skip=cfg.frame_skip)
    if cfg.terminal_on_life_loss:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    env = ResizeThenGray(env, cfg.screen_size)
    return gym.wrappers.FrameStackObservation(env, cfg.frame_stack)


def _gymnasium(env: gym.Env, cfg: AtariSettings) -> gym.Env:
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=cfg.noop_max, frame_skip=cfg.frame_skip, screen_size=cfg.screen_size,
        terminal_on_life_loss=cfg.terminal_on_life_loss, grayscale_obs=True, scale_obs=False)
    return gym.wrappers.FrameStackObservation(env, cfg.frame_stack)


PIPELINES = {"sb3": _sb3, "cleanrl": _cleanrl, "gymnasium": _gymnasium}


PONG = AtariSettings("ALE/Pong-v5", preprocessing="gymnasium", repeat_action_probability=0.0,
                     full_action_space=True)
"""The bundled agent's game and preprocessing (its model card says the same)."""


def make_pong_env(render_mode: str | None = None, **settings) -> gym.Env:
    """A shortcut: the bundled agent's Pong, ``uint8`` observations of shape ``(4, 84, 84)``."""
    return make_env(PONG, render_mode=render_mode, **settings)
