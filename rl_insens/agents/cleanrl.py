"""CleanRL checkpoints: the ``.cleanrl_model`` state dicts of ``ppo_atari.py`` and ``dqn_atari.py``.

They hold weights only, under CleanRL's module names: ``network.*`` (NatureCNN up to its
512-unit ReLU), ``actor`` and ``critic`` for PPO; ``network.*`` ending in the Q-values for
DQN. The networks are rebuilt with those names, so the weights load as saved, and the
division by 255 that CleanRL does in ``forward`` is the agent's ``preprocess``. The file says
nothing of the game, which the user names (``--env``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import Agent, generic_meanings


def nature_cnn(frames: int = 4) -> list[nn.Module]:
    """CleanRL's (and the DQN paper's) convolutional trunk, up to the flattened features."""
    return [nn.Conv2d(frames, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten()]


def _under(prefix: str, state: dict) -> dict:
    """The weights of the submodule named ``prefix``, under their names inside it."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def load(path: Path) -> Agent:
    """The agent in the CleanRL checkpoint at ``path``: PPO's actor (its critic the value network)
    or DQN's Q-network, without a game; a one-line ``ValueError`` for any other file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a state dict
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not a readable CleanRL checkpoint: {first}") from None
    if not isinstance(state, dict) or "network.0.weight" not in state:
        raise ValueError(f"{path} is not a CleanRL Atari checkpoint: expected the weights of ppo_atari.py "
                         "or dqn_atari.py (keys network.*, actor.*, critic.*)")
    frames = int(state["network.0.weight"].shape[1])
    if "actor.weight" in state:  # ppo_atari.py: trunk + actor and critic heads
        n_actions = int(state["actor.weight"].shape[0])
        trunk = nn.Sequential(*nature_cnn(frames), nn.Linear(3136, 512), nn.ReLU())
        trunk.load_state_dict(_under("network.", state))
        actor, critic = nn.Linear(512, n_actions), nn.Linear(512, 1)
        actor.load_state_dict({"weight": state["actor.weight"], "bias": state["actor.bias"]})
        critic.load_state_dict({"weight": state["critic.weight"], "bias": state["critic.bias"]})
        network, value, kind = nn.Sequential(*trunk, actor), nn.Sequential(*trunk, critic), "actor-critic"
    else:  # dqn_atari.py: the Q-network
        last = max(int(k.split(".")[1]) for k in state if k.startswith("network."))
        n_actions = int(state[f"network.{last}.weight"].shape[0])
        network = nn.Sequential(*nature_cnn(frames), nn.Linear(3136, 512), nn.ReLU(),
                                nn.Linear(512, n_actions))
        network.load_state_dict(_under("network.", state))
        value, kind = None, "q-values"
    card = {"source": str(path), "format": "cleanrl", "observation_shape": [frames, 84, 84],
            "n_actions": n_actions}
    return Agent(network.eval(), generic_meanings(n_actions), kind, value and value.eval(), card)
