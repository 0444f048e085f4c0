"""stable-baselines3 zips, alone or in an rl-baselines3-zoo run folder: the policy as a plain network.

A zip's ``data`` holds cloudpickled objects (the policy class, spaces, schedules), and
unpickling them would run whatever code a shared zip carries. So none is unpickled: every
such field is handed to SB3's reader as already known, and the few that matter are rebuilt
from the readable text beside them (the spaces' shape and size, the policy class's name,
checked against the SB3 policies this reader knows). The weights are tensors, which SB3
reads with ``weights_only=True``.

The game a zip was trained in comes from the rl-baselines3-zoo files next to it, read by
:mod:`rl_insens.agents.zoo`.
"""

from __future__ import annotations

import importlib
import json
import re
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
from torch import nn

from ..envs import AtariSettings
from . import Agent, copy_module, generic_meanings
from .zoo import zoo_settings

POLICIES = {
    ("stable_baselines3.common.policies", "ActorCriticCnnPolicy"),
    ("stable_baselines3.dqn.policies", "CnnPolicy"),
    ("sb3_contrib.qrdqn.policies", "CnnPolicy"),
}
"""The policy classes this reader rebuilds: Atari CNN policies of PPO/A2C, DQN and QR-DQN."""


def _raw_data(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise ValueError(f"{path} is not a readable stable-baselines3 agent: {error}") from None


def _space_shape(field: dict) -> tuple[int, ...]:
    shape = field.get("_shape", [])  # a list, or its text where SB3 wrote the space's attributes as text
    return tuple(json.loads(shape) if isinstance(shape, str) else shape)


def _policy_class(path: Path, field) -> type:
    """The policy class, named in the readable text of the zip and imported only if known."""
    field = field if isinstance(field, dict) else {}
    module = field.get("__module__")
    match = re.match(r"<function (\w+)\.__init__", str(field.get("__init__", "")))
    name = match.group(1) if match else None
    if (module, name) not in POLICIES:
        raise ValueError(f"unsupported stable-baselines3 policy {name or 'of unknown class'} in {path}; "
                         "expected an Atari CnnPolicy of PPO/A2C, DQN or QR-DQN")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise ValueError(f"{path} needs {module.split('.')[0]} to load: pip install sb3-contrib") from None


CLASS_SETTINGS = {
    "activation_fn": {f"<class 'torch.nn.modules.activation.{name}'>": getattr(nn, name)
                      for name in ("ReLU", "Tanh", "LeakyReLU", "ELU", "GELU", "Sigmoid")},
    "features_extractor_class": {"<class 'stable_baselines3.common.torch_layers.NatureCNN'>": None,
                                 "<class 'rl_insens.agents.RLNetExtractor'>": "rlnet",
                                 "<class 'rl_insens.agents.native.RLNetExtractor'>": "rlnet"},
}
"""Policy settings that name a class, and the classes they may name (read from their text)."""
TRAINING_ONLY = {"optimizer_class", "optimizer_kwargs"}
"""Policy settings that only training uses: skipped, whatever class they name."""


def _policy_kwargs(path: Path, field) -> dict:
    """The policy's settings, from their readable text; a class outside ``CLASS_SETTINGS`` is refused."""
    if not isinstance(field, dict):
        return {}
    kwargs = {}
    for key, value in field.items():
        if key.startswith(":") or key in TRAINING_ONLY:
            continue
        if key in CLASS_SETTINGS:
            if value not in CLASS_SETTINGS[key]:
                raise ValueError(f"{path}: its policy uses {key}={value}, which rl-insens cannot rebuild "
                                 "without running code from the zip")
            value = CLASS_SETTINGS[key][value]
            if value is None:
                continue  # SB3's default
            if value == "rlnet":
                from .native import RLNetExtractor

                value = RLNetExtractor
        elif isinstance(value, str) and value.startswith("<"):
            raise ValueError(f"{path}: its policy setting {key}={value} could only be read by running code "
                             "from the zip, which rl-insens does not do")
        kwargs[key] = value
    return kwargs


def load(path: Path, read_zoo: bool = True) -> Agent:
    """The zip's policy as an :class:`Agent`, without unpickling anything from the zip.

    Args:
        path: the stable-baselines3 ``.zip``.
        read_zoo: take the game from the rl-baselines3-zoo files next to the zip, where there
            are some (the caller naming the game passes False).

    Returns:
        The :class:`Agent`: the policy's score network and value network where it has one,
        with its game when the zoo's files say it.
    """
    from stable_baselines3.common.save_util import load_from_zip_file

    raw = _raw_data(path)
    if "policy_class" not in raw:
        raise ValueError(f"{path} holds no stable-baselines3 policy")
    known = {k: None for k, v in raw.items() if isinstance(v, dict) and ":serialized:" in v}
    try:
        _, params, _ = load_from_zip_file(path, device="cpu", custom_objects=known)
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} is not a readable stable-baselines3 agent: {error}") from None
    obs, act = raw.get("observation_space", {}), raw.get("action_space", {})
    shape = _space_shape(obs)
    if "box.Box" not in str(obs.get(":type:")) or len(shape) != 3:
        raise ValueError(f"{path} is not an Atari agent: its observations are {obs.get(':type:')} of shape "
                         f"{list(shape)}, not stacked image frames")
    if "Discrete" not in str(act.get(":type:")):
        raise ValueError(f"{path} is not an Atari agent: its actions are {act.get(':type:')}")
    space = gym.spaces.Box(0, 255, shape, np.dtype(obs.get("dtype", "uint8")))
    actions = gym.spaces.Discrete(int(act["n"]))
    policy_class = _policy_class(path, raw["policy_class"])
    kwargs = _policy_kwargs(path, raw.get("policy_kwargs", {}))
    policy = policy_class(space, actions, lambda _: 0.0, **kwargs)
    try:
        policy.load_state_dict(params["policy"])
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit a {policy_class.__name__} "
                         f"with settings {kwargs}: {str(error).splitlines()[0]}") from None
    policy.eval()
    network, value, kind = _network(policy)
    from ..engine import read_chain

    read_chain(network, shape)  # non-ReLU or non-chain networks fail here, by name
    scale = 1 / 255 if getattr(policy, "normalize_images", True) else 1.0
    card = {"source": str(path), "format": "sb3", "observation_shape": list(shape),
            "n_actions": int(actions.n),
            "steps_trained": raw.get("num_timesteps")}
    settings = zoo_settings(path) if read_zoo else None
    if settings is not None:
        card["environment_from"] = "rl-baselines3-zoo files next to the zip"
    return Agent(network, generic_meanings(int(actions.n)), kind, value, card, scale, settings)


def from_policy(policy, game: AtariSettings, steps_trained: int | None = None) -> Agent:
    """A live SB3 policy (one being trained, say) as an :class:`Agent` playing ``game``.

    The networks are copies, so training on afterwards does not change the agent.

    Args:
        policy: an SB3 policy of a kind :func:`load` reads (actor-critic, DQN or QR-DQN).
        game: the game it plays, with the preprocessing it trains with.
        steps_trained: environment steps so far, for the agent's card.

    Returns:
        The :class:`Agent` set to play ``game``.
    """
    from ..engine import read_chain

    shape = tuple(policy.observation_space.shape)
    network, value, kind = _network(policy)
    read_chain(network, shape)
    n_actions = int(policy.action_space.n)
    card = {"source": f"the {type(policy).__name__} in training", "format": "sb3",
            "observation_shape": list(shape), "n_actions": n_actions, "steps_trained": steps_trained}
    scale = 1 / 255 if getattr(policy, "normalize_images", True) else 1.0
    return Agent(network, generic_meanings(n_actions), kind, value, card, scale).with_game(game)


def _network(policy) -> tuple[nn.Module, nn.Module | None, str]:
    """The score network of an SB3 policy (actor-critic, DQN or QR-DQN), as a plain chain."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    from .native import RLNetExtractor, rlnet_from_policy

    if isinstance(policy, ActorCriticPolicy):
        if isinstance(policy.features_extractor, RLNetExtractor):
            net, value = rlnet_from_policy(policy)
            return net, value, "actor-critic"
        net = nn.Sequential(copy_module(policy.pi_features_extractor),
                            copy_module(policy.mlp_extractor.policy_net), copy_module(policy.action_net))
        value = nn.Sequential(copy_module(policy.vf_features_extractor),
                              copy_module(policy.mlp_extractor.value_net), copy_module(policy.value_net))
        return net.eval(), value.eval(), "actor-critic"
    if hasattr(policy, "q_net") and hasattr(policy.q_net, "q_net"):  # DQN
        q = policy.q_net
        return nn.Sequential(copy_module(q.features_extractor), copy_module(q.q_net)).eval(), None, "q-values"
    q = policy.quantile_net  # QR-DQN: Q is the mean over quantiles, a linear map
    layers = list(copy_module(q.quantile_net))
    last, n_quantiles = layers[-1], q.n_quantiles
    n_actions = last.out_features // n_quantiles
    mean = nn.Linear(last.in_features, n_actions)
    # SB3-contrib lays the outputs out as (quantile, action).
    mean.weight.data = last.weight.data.view(n_quantiles, n_actions, -1).mean(0)
    mean.bias.data = last.bias.data.view(n_quantiles, n_actions).mean(0)
    return nn.Sequential(copy_module(q.features_extractor), *layers[:-1], mean).eval(), None, "q-values"
