"""Fixtures shared by the test files: fake Atari frames, random RLNET policies and agents.

Each fixture is a factory (a function the test calls with its own seed or size), so one test
can build several and module-scoped fixtures can use them. Markers are registered in
pyproject.toml; ``gpu`` tests are skipped here when there is no CUDA device.
"""

import numpy as np
import pytest
import torch
from stable_baselines3.common.envs import FakeImageEnv

import rl_insens as ri
from rl_insens.agents import Agent
from rl_insens.envs import PONG

PONG_ACTIONS = 18
"""RLNET's default output: the full Atari action set."""


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    no_cuda = pytest.mark.skip(reason="no CUDA device here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_cuda)


@pytest.fixture(scope="session")
def fake_atari():
    """SB3's fake Atari environment as our policies see it: 4 stacked 84x84 uint8 frames of
    noise, channels first; enough to build, train briefly and query a policy without a ROM."""

    def make(n_actions: int = 6) -> FakeImageEnv:
        return FakeImageEnv(action_dim=n_actions, n_channels=4, channel_first=True)

    return make


@pytest.fixture(scope="session")
def observations():
    """Random stacked frames ``[n, 4, 84, 84]`` (uint8), the same for the same seed."""

    def make(n: int = 4, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)

    return make


@pytest.fixture(scope="session")
def random_rlnet():
    """RLNET with random weights from ``seed``; ``bias_shift`` is taken off the hidden layers'
    biases so that fewer units are active, as in a trained policy (a fresh one has about half)."""

    def make(seed: int = 0, bias_shift: float = 0.0) -> ri.RLNet:
        torch.manual_seed(seed)
        net = ri.RLNet().eval()
        with torch.no_grad():
            for layer in (net.conv1, net.conv2, net.conv3, net.fc1):
                layer.bias -= bias_shift
        return net

    return make


@pytest.fixture(scope="session")
def pong_agent(random_rlnet):
    """An agent for Pong: ``random_rlnet(seed, bias_shift)``, or ``network`` when given, with
    ``fields`` of :class:`~rl_insens.agents.Agent` (``card``, ``value_network``, ...)."""

    def make(seed: int = 0, bias_shift: float = 0.0, *, network: torch.nn.Module | None = None,
             kind: str = "actor-critic", **fields) -> Agent:
        network = random_rlnet(seed, bias_shift) if network is None else network
        return Agent(network, [f"a{i}" for i in range(PONG_ACTIONS)], kind, settings=PONG, **fields)

    return make


@pytest.fixture(scope="session")
def sb3_rlnet(fake_atari):
    """An untrained SB3 PPO whose policy is RLNET (our features extractor, no extra MLP)."""
    from stable_baselines3 import PPO

    def make(seed: int = 0) -> PPO:
        return PPO("CnnPolicy", fake_atari(PONG_ACTIONS), n_steps=16, seed=seed,
                   policy_kwargs=dict(features_extractor_class=ri.agents.RLNetExtractor, net_arch=[]))

    return make


@pytest.fixture(scope="session")
def rlnet_agent_dir(sb3_rlnet, tmp_path_factory) -> str:
    """``sb3_rlnet(0)`` saved as an rl-insens agent directory for Pong. Shared by every test
    that asks for it: copy it before changing it."""
    folder = tmp_path_factory.mktemp("agent") / "tiny"
    return str(ri.agents.save_agent(sb3_rlnet(0).policy, folder, {"environment": PONG.as_dict()}))
