"""The RAM object tables put every object's box where its pixels are, on frames of real play."""

import gymnasium as gym
import numpy as np
import pytest

from rl_insens.envs import ale_ids
from rl_insens.objects import OBJECTS, observation_mask


@pytest.mark.slow
@pytest.mark.parametrize("game", sorted(OBJECTS))
def test_ram_boxes_hold_the_objects_pixels(game):
    ale_ids()
    env = gym.make(f"{game}NoFrameskip-v4")
    screen, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    inside, seen = {o.name: 0 for o in OBJECTS[game]}, {o.name: 0 for o in OBJECTS[game]}
    for t in range(1500):
        action = 1 if t % 40 == 0 else int(rng.integers(env.action_space.n))  # FIRE now and then
        screen, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            screen, _ = env.reset()
        ram = env.unwrapped.ale.getRAM()
        for obj in OBJECTS[game]:
            ys, xs = np.nonzero(obj.pixels(screen))
            if len(ys) < 2 or np.ptp(ys) > obj.height + 1 or np.ptp(xs) > obj.width + 1:
                continue  # hidden, or merged with another thing of its colour
            top, bottom, left, right = obj.box(ram)
            seen[obj.name] += 1
            inside[obj.name] += bool(((ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)).all())
    env.close()
    for name in seen:
        assert seen[name] > 100, f"{name} seldom visible ({seen[name]} frames)"
        assert inside[name] / seen[name] > 0.97, f"{name}: {inside[name]} of {seen[name]} frames in its box"


def test_observation_mask_keeps_small_objects():
    mask = observation_mask([(100, 104, 80, 82)], (210, 160))
    assert mask.any() and mask.sum() <= 6
    rows, cols = np.nonzero(mask)
    assert 39 <= rows.min() and rows.max() <= 42 and 41 <= cols.min() and cols.max() <= 43
