"""An Atari environment's whole state, taken and put back exactly, wrappers included.

The emulator keeps its own state (``ale.cloneState``/``restoreState``); the wrappers keep
frames and counters of their own, which are copied alongside. Only environments whose every
wrapper is known here are accepted, so that going back never silently differs.
"""

from __future__ import annotations

import gymnasium as gym


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
    """Put ``env`` back in a state :func:`capture` took of it (or of an environment made alike)."""
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
