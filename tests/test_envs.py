"""Games: any ALE id, each trainer's preprocessing, and the action set that fits an agent."""

import gymnasium as gym
import numpy as np
import pytest

from rl_insens.envs import AtariSettings, GameError, action_meanings, make_env, settings_for_outputs

STEPS = 200


def sb3_observations(env_id: str, seed: int, actions: list[int]) -> list[np.ndarray]:
    """What an SB3 agent trained with ``make_atari_env`` + ``VecFrameStack(4)`` sees (channels first)."""
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    venv = VecTransposeImage(VecFrameStack(make_atari_env(
        env_id, n_envs=1, seed=seed, wrapper_kwargs={"terminal_on_life_loss": False}), 4))
    seen = [venv.reset()[0]]
    for action in actions:
        obs, _, done, _ = venv.step(np.array([action]))
        if done[0]:
            break
        seen.append(obs[0])
    venv.close()
    return seen


def our_observations(env: gym.Env, seed: int, actions: list[int]) -> list[np.ndarray]:
    seen = [env.reset(seed=seed)[0]]
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
        seen.append(obs)
    env.close()
    return seen


GAMES = ["PongNoFrameskip-v4", "BreakoutNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4"]


@pytest.mark.parametrize("env_id", GAMES)
def test_observations_equal_sb3s_bit_for_bit(env_id):
    """Same seed and actions: the same uint8 frames as SB3's own Atari pipeline, at every step."""
    env = make_env(env_id)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, STEPS).tolist()
    ours, theirs = our_observations(env, 3, actions), sb3_observations(env_id, 3, actions)
    assert len(ours) == len(theirs) > 150  # Breakout's random play may lose its last life near the end
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (4, 84, 84)
        assert np.array_equal(a, b), f"step {t}: {np.abs(a.astype(int) - b).max()} grey levels apart"


def test_v5_id_is_the_same_game_with_sticky_actions_named():
    """``ALE/Breakout-v5`` is Breakout with the v5 default of sticky actions, unless told otherwise."""
    assert AtariSettings("ALE/Breakout-v5").sticky == 0.25
    assert AtariSettings("BreakoutNoFrameskip-v4").sticky == 0.0
    actions = [1, 3, 3, 2, 0] * 12
    v5 = our_observations(make_env("ALE/Breakout-v5", repeat_action_probability=0.0), 5, actions)
    v4 = our_observations(make_env("BreakoutNoFrameskip-v4"), 5, actions)
    assert all(np.array_equal(a, b) for a, b in zip(v5, v4, strict=True))


def test_cleanrl_preprocessing_resizes_colour_then_grays():
    """CleanRL's pipeline: SB3's reset/skip/FIRE wrappers, then the colour screen resized and grayed."""
    import cv2
    from stable_baselines3.common.atari_wrappers import FireResetEnv, MaxAndSkipEnv, NoopResetEnv

    import rl_insens.envs  # noqa: F401  (registers ALE)

    raw = FireResetEnv(MaxAndSkipEnv(NoopResetEnv(gym.make("BreakoutNoFrameskip-v4"), 30), 4))
    frame, _ = raw.reset(seed=7)
    expected = cv2.cvtColor(cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    obs, _ = make_env("BreakoutNoFrameskip-v4", preprocessing="cleanrl").reset(seed=7)
    assert np.array_equal(obs[-1], expected) and np.array_equal(obs[0], expected)  # padded with the first
    sb3, _ = make_env("BreakoutNoFrameskip-v4").reset(seed=7)
    assert not np.array_equal(sb3[-1], obs[-1]) and not sb3[0].any()  # gray-then-resize, zero padding


def test_action_set_follows_the_agents_outputs():
    settings = AtariSettings("BreakoutNoFrameskip-v4")
    assert not settings_for_outputs(settings, 4).full_action_space
    full = settings_for_outputs(settings, 18)
    assert full.full_action_space and make_env(full).action_space.n == 18
    assert action_meanings(settings) == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    with pytest.raises(GameError, match=r"has 6 actions, but BreakoutNoFrameskip-v4 has 4 .* or 18"):
        settings_for_outputs(settings, 6)


def test_unknown_game_lists_close_matches():
    with pytest.raises(GameError, match="did you mean.*ALE/Breakout-v5"):
        make_env("ALE/Breakot-v5")
    with pytest.raises(GameError, match="unknown preprocessing"):
        AtariSettings("ALE/Pong-v5", preprocessing="keras")
