"""The step-through inspector: exact going back, forks, margins, state changes and what-ifs."""

import numpy as np
import pytest
import torch

import rl_insens as ri
from rl_insens.frame_inspection import add_noise, occlude


@pytest.fixture(scope="module")
def agent(pong_agent):
    return pong_agent(0, bias_shift=0.03)


def test_back_after_step_is_bit_identical(agent):
    ins = ri.Inspector(agent, seed=1, methods=("gradient",))
    start = ins.frame.observation.copy()
    ins.step(6)
    later = ins.frame.observation.copy()
    ins.back(6)
    assert ins.t == 0 and np.array_equal(ins.frame.observation, start)
    ins.goto(6)
    assert np.array_equal(ins.frame.observation, later)


def test_restored_emulator_replays_the_same_frames(agent):
    """Going back and taking other actions, then the original ones again, reproduces the frames."""
    ins = ri.Inspector(agent, seed=2, methods=("gradient",))
    actions = [2, 3, 2, 2, 5, 4, 3, 0]
    for a in actions:
        ins.step(action=a)
    original = [s.observation.copy() for s in ins.history]
    ins.back(5)
    ins.step(2, action=1)  # a different future: the emulator is restored to frame 3 first
    ins.back(2)
    for a in actions[3:]:
        ins.step(action=a)
    assert all(np.array_equal(a, b.observation) for a, b in zip(original, ins.history, strict=True))


def test_fork_is_independent(agent):
    ins = ri.Inspector(agent, seed=3, methods=("gradient",))
    ins.step(4)
    fork = ins.fork()
    fork.step(3, action=2)
    ins.step(3, action=3)
    assert fork.t == ins.t == 7
    assert len(fork.history) == len(ins.history) == 8
    reference = ri.Inspector(agent, seed=3, methods=("gradient",))
    reference.step(4)
    reference.step(3, action=2)
    assert np.array_equal(reference.frame.observation, fork.frame.observation)


def test_inspection_contents(agent):
    ins = ri.Inspector(agent, seed=0, methods=("insens", "gradient"))
    frame = ins.step(3)
    assert frame.action_probs.shape == (18,) and frame.action == int(np.argmax(frame.logits))
    assert set(frame.maps) == {"insens", "gradient"} and frame.map("insens").shape == (4, 84, 84)
    p = frame.projection("conv2", 17)
    assert p.weight.shape == (1, 4, 84, 84)
    x = frame.x[0]
    assert torch.allclose((p.weight * x).sum() + p.bias, p.activity, atol=1e-4)
    margin, (layer, index) = frame.stability
    q = frame.projection(layer, index)
    assert margin == pytest.approx(float(q.activity.abs() / q.squared_norm.sqrt()), rel=1e-4)
    change = ins.state_change()
    assert set(change) == {"conv1", "conv2", "conv3", "fc1"}
    before, after = ins.inspection(2).neurons, frame.neurons
    switched = sum((before.layers[k].active != after.layers[k].active).sum().item() for k in change)
    assert switched == sum(c["on"] + c["off"] for c in change.values())


def test_what_if(agent):
    ins = ri.Inspector(agent, seed=0, methods=("insens",))
    ins.step(2)
    same = ins.what_if(ins.frame.observation.copy())
    assert np.array_equal(same.original.logits, same.edited.logits)
    assert np.array_equal(*same.insens)
    occluded = ins.what_if(occlude(ins.frame.observation, slice(30, 50), slice(0, 84)))
    assert not np.array_equal(occluded.original.logits, occluded.edited.logits)
    noisy = add_noise(ins.frame.observation, slice(0, 10), slice(0, 10))
    assert noisy.dtype == np.uint8 and not np.array_equal(noisy, ins.frame.observation)
    with pytest.raises(ValueError, match="shape"):
        ins.what_if(np.zeros((4, 10, 10), np.uint8))
