"""rl-insens agent directories: RLNET weights (``policy.pt``) and a model card (``card.json``).

The card names the game and preprocessing the agent was trained with, so the agent carries
its environment; the weights are a plain state dict, read without unpickling code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from ..envs import AtariSettings, action_meanings
from ..nets import ATARI_OBSERVATION_SHAPE, RLNet
from . import Agent, copy_module, generic_meanings

POLICY_FILE, CARD_FILE = "policy.pt", "card.json"


class RLNetExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: RLNET's trunk up to and including fc-512 and its ReLU.

    SB3 divides uint8 image observations by 255 before calling it; its action head (a
    ``Linear(512, n_actions)``) then plays the part of RLNET's output layer.
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 512) -> None:
        if tuple(observation_space.shape) != ATARI_OBSERVATION_SHAPE:
            raise ValueError(f"RLNet takes observations of shape {ATARI_OBSERVATION_SHAPE}, "
                             f"the environment gives {observation_space.shape}")
        super().__init__(observation_space, features_dim)
        self.trunk = nn.Sequential(*list(RLNet().children())[:-1])

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.trunk(observations)


def rlnet_from_policy(policy) -> tuple[RLNet, nn.Module]:
    """Our PPO policies: RLNET itself, its output layer being SB3's action head; and the value
    network, RLNET's trunk under SB3's value head."""
    net = RLNet(policy.action_net.out_features)
    layers = list(net.children())
    for ours, theirs in zip(layers[:-1], policy.features_extractor.trunk, strict=True):
        ours.load_state_dict(theirs.state_dict())
    layers[-1].load_state_dict(policy.action_net.state_dict())
    return net.eval(), with_head(net, policy.value_net).eval()


def with_head(net: RLNet, head: nn.Module) -> nn.Sequential:
    """RLNET's trunk (copied) under another output layer: the value network."""
    return nn.Sequential(*[copy_module(layer) for layer in list(net.children())[:-1]], copy_module(head))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings_from_card(card: dict) -> AtariSettings | None:
    """The card's game; cards written before the preprocessing was named used gymnasium's."""
    environment = card.get("environment")
    if not environment or "env_id" not in environment:
        return None
    return AtariSettings.from_dict({"preprocessing": "gymnasium", **environment})


def load(path: Path) -> Agent:
    card_path, weights_path = path / CARD_FILE, path / POLICY_FILE
    if not card_path.exists() or not weights_path.exists():
        raise FileNotFoundError(
            f"{path} is not an rl-insens agent directory: it needs {CARD_FILE} and {POLICY_FILE}")
    card = json.loads(card_path.read_text())
    digest = sha256_of(weights_path)
    if card.get("weights_sha256") not in (None, digest):
        raise ValueError(f"{weights_path} does not match its model card (sha256 {digest})")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    network = RLNet(card.get("n_actions", 18))
    network.load_state_dict(state["rlnet"])
    value = None
    if "value_head" in state:
        head = nn.Linear(512, 1)
        head.load_state_dict(state["value_head"])
        value = with_head(network, head).eval()
    meanings = card.get("action_meanings") or generic_meanings(network.n_actions)
    card = {**card, "source": str(path), "format": "rl-insens"}
    return Agent(network.eval(), meanings, "actor-critic", value, card, settings=settings_from_card(card))


def save_agent(policy, out_dir: str | Path, card: dict) -> Path:
    """Write an rl-insens agent directory from one of our SB3 PPO policies.

    Weights only (RLNET and the value head, no optimiser state), then the model card with
    their sha256 and the game's action names; both are written under temporary names and
    renamed, so a crash leaves the previous agent intact.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, _ = rlnet_from_policy(policy)
    weights = out_dir / POLICY_FILE
    tmp = weights.with_suffix(".tmp")
    torch.save({"rlnet": net.state_dict(), "value_head": policy.value_net.state_dict()}, tmp)
    card = {**card, "n_actions": net.n_actions, "observation_shape": list(ATARI_OBSERVATION_SHAPE),
            "weights_file": POLICY_FILE, "weights_sha256": sha256_of(tmp)}
    settings = settings_from_card(card)
    meanings = action_meanings(settings) if settings else generic_meanings(net.n_actions)
    card.setdefault("action_meanings", meanings)
    card_tmp = out_dir / (CARD_FILE + ".tmp")
    card_tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, weights)
    os.replace(card_tmp, out_dir / CARD_FILE)
    return out_dir
