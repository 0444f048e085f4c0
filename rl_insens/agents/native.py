"""rl-insens agent directories: RLNET weights (``policy.pt``) and a model card (``card.json``).

The card names the game and preprocessing the agent was trained with, so the agent carries
its environment; the weights are a plain state dict, read without unpickling code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from ..envs import AtariSettings, action_meanings
from ..files import write_bytes, write_json
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
    """The hex sha256 of the file at ``path``: what a model card records to check its weights file by."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings_from_card(card: dict) -> AtariSettings | None:
    """The card's game; cards written before the preprocessing was named used gymnasium's."""
    environment = card.get("environment")
    if not environment or "env_id" not in environment:
        return None
    return AtariSettings.from_dict({"preprocessing": "gymnasium", **environment})


def load(path: Path) -> Agent:
    """The agent in the rl-insens agent directory at ``path``, set to the game its model card names (if
    any); a one-line error for a missing or damaged file, or weights that do not match the card."""
    card_path = path / CARD_FILE
    if not card_path.exists():
        raise FileNotFoundError(f"{path} is not an rl-insens agent directory: it has no {CARD_FILE}")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{card_path} is not a readable model card: {error}") from None
    weights_path = path / card.get("weights_file", POLICY_FILE)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{path} is not a whole rl-insens agent directory: {weights_path.name} "
                                "is missing")
    digest = sha256_of(weights_path)
    if card.get("weights_sha256") not in (None, digest):
        raise ValueError(f"{weights_path} does not match its model card (sha256 {digest})")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        network = RLNet(card.get("n_actions", 18))
        network.load_state_dict(state["rlnet"])
        value = None
        if "value_head" in state:
            head = nn.Linear(512, 1)
            head.load_state_dict(state["value_head"])
            value = with_head(network, head).eval()
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{weights_path} holds no readable rl-insens weights ({first_line})") from None
    meanings = card.get("action_meanings") or generic_meanings(network.n_actions)
    card = {**card, "source": str(path), "format": "rl-insens"}
    return Agent(network.eval(), meanings, "actor-critic", value, card, settings=settings_from_card(card))


def save_agent(policy, out_dir: str | Path, card: dict) -> Path:
    """Write an rl-insens agent directory from one of our SB3 PPO policies.

    Weights only (RLNET and the value head, no optimiser state), in a file named by their
    sha256, then the model card naming that file and the game's action names: the card is the
    single commit point, so a crash at any moment leaves either the previous agent or the new
    one, whole.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, _ = rlnet_from_policy(policy)
    buffer = io.BytesIO()
    torch.save({"rlnet": net.state_dict(), "value_head": policy.value_net.state_dict()}, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    weights_file = f"policy-{digest[:16]}.pt"
    write_bytes(out_dir / weights_file, buffer.getvalue())
    card_path = out_dir / CARD_FILE
    previous = json.loads(card_path.read_text()).get("weights_file") if card_path.exists() else None
    card = {**card, "n_actions": net.n_actions, "observation_shape": list(ATARI_OBSERVATION_SHAPE),
            "weights_file": weights_file, "weights_sha256": digest}
    settings = settings_from_card(card)
    meanings = action_meanings(settings) if settings else generic_meanings(net.n_actions)
    card.setdefault("action_meanings", meanings)
    write_json(card_path, card)
    if previous and previous != weights_file:
        (out_dir / previous).unlink(missing_ok=True)
    return out_dir
