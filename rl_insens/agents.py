"""The Pong environment the agents see, and the bridge between SB3 policies and RLNet.

Every preprocessing setting lives in :class:`PongSettings`; its defaults are the ones the
shipped agent was trained with, and they are written into every agent's model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from .nets import PONG_OBSERVATION_SHAPE, RLNet


@dataclass(frozen=True)
class PongSettings:
    """How raw ALE Pong becomes the policy's observation (SB3/DQN-paper conventions)."""

    env_id: str = "ALE/Pong-v5"
    frame_skip: int = 4
    """Agent steps every 4th frame, repeating its action; the max of the last two frames is seen."""
    screen_size: int = 84
    grayscale: bool = True
    frame_stack: int = 4
    noop_max: int = 30
    """Random number of no-ops at reset, so that episodes from one seed still differ."""
    repeat_action_probability: float = 0.0
    """Sticky actions; 0.25 is the harder evaluation setting of Machado et al."""
    full_action_space: bool = True
    """All 18 joystick actions, so the policy has RLNET's 18 outputs."""
    terminal_on_life_loss: bool = False
    max_episode_steps: int | None = 27_000
    """Agent steps (108k frames), the usual cap on an Atari episode."""

    def as_dict(self) -> dict:
        return asdict(self)


def make_pong_env(render_mode: str | None = None, **settings) -> gym.Env:
    """Pong as the agents see it: ``uint8`` observations of shape ``(4, 84, 84)``.

    Keyword arguments override :class:`PongSettings` fields (``repeat_action_probability=0.25``
    for sticky actions). ``render_mode="rgb_array"`` gives the colour game screen.
    """
    import ale_py  # noqa: F401  (registers the ALE environments)

    gym.register_envs(ale_py)
    cfg = PongSettings(**settings)
    env = gym.make(
        cfg.env_id,
        frameskip=1,  # AtariPreprocessing does the skipping (and max-pools the last two frames)
        repeat_action_probability=cfg.repeat_action_probability,
        full_action_space=cfg.full_action_space,
        max_episode_steps=None if cfg.max_episode_steps is None else cfg.max_episode_steps * cfg.frame_skip,
        render_mode=render_mode,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=cfg.noop_max,
        frame_skip=cfg.frame_skip,
        screen_size=cfg.screen_size,
        terminal_on_life_loss=cfg.terminal_on_life_loss,
        grayscale_obs=cfg.grayscale,
        scale_obs=False,
    )
    return gym.wrappers.FrameStackObservation(env, cfg.frame_stack)


class RLNetExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: RLNET's trunk up to and including fc-512 and its ReLU.

    SB3 divides uint8 image observations by 255 before calling it; its action head (a
    ``Linear(512, 18)``) then plays the part of RLNET's output layer.
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 512) -> None:
        if tuple(observation_space.shape) != PONG_OBSERVATION_SHAPE:
            raise ValueError(
                f"RLNet takes observations of shape {PONG_OBSERVATION_SHAPE}, "
                f"the environment gives {observation_space.shape}"
            )
        super().__init__(observation_space, features_dim)
        self.trunk = nn.Sequential(*list(RLNet().children())[:-1])

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.trunk(observations)
