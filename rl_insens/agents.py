"""The Pong environment the agents see, and the bridge between SB3 policies and RLNet.

Every preprocessing setting lives in :class:`PongSettings`; its defaults are the ones the
shipped agent was trained with, and they are written into every agent's model card.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from .files import write_bytes, write_json
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


# ----- agents ------------------------------------------------------------------------------
POLICY_FILE, CARD_FILE = "policy.pt", "card.json"


@dataclass
class Agent:
    """A policy ready for inspection.

    ``network`` maps stacked float frames in [0, 1] (``[B, 4, 84, 84]``) to one score per action
    (policy logits, or Q-values for DQN agents) and is a plain chain the engine accepts. The
    division by 255 happens in :meth:`preprocess`, outside the network, so that attributions are
    with respect to the frames the policy sees.
    """

    network: nn.Module
    action_meanings: list[str]
    kind: str
    value_network: nn.Module | None = None
    card: dict | None = None
    scale: float = 1 / 255

    @property
    def observation_shape(self) -> tuple[int, ...]:
        shape = (self.card or {}).get("observation_shape", PONG_OBSERVATION_SHAPE)
        return tuple(shape)

    @property
    def env_settings(self) -> dict:
        """The :class:`PongSettings` the agent was trained with, as far as its card says."""
        settings = (self.card or {}).get("environment") or {}
        return {k: v for k, v in settings.items() if k in PongSettings.__dataclass_fields__}

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device) -> Agent:
        self.network.to(device)
        if self.value_network is not None:
            self.value_network.to(device)
        return self

    def preprocess(self, observations) -> torch.Tensor:
        """uint8 observations as the environment gives them to floats for the network."""
        x = torch.as_tensor(observations, device=self.device)
        if x.dim() == len(self.observation_shape):
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.observation_shape:
            raise ValueError(f"observation of shape {list(x.shape[1:])} does not fit this agent, "
                             f"which takes {list(self.observation_shape)}")
        return x.float() * self.scale

    def action_probs(self, scores: torch.Tensor) -> torch.Tensor:
        """The probability the agent's greedy play gives each action, from the network's scores
        ``[B, n_actions]``: the policy's softmax for actor-critic logits; for Q-values, which
        are not log-probabilities, 1 on the greedy action and 0 elsewhere."""
        if self.kind == "actor-critic":
            return scores.softmax(1)
        return torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).to(scores.dtype)

    @torch.no_grad()
    def act(self, observation) -> int:
        """Greedy action for ONE stacked observation as the environment returns it."""
        x = torch.as_tensor(observation)
        if x.dim() != len(self.observation_shape):
            raise ValueError(f"act takes one observation of shape {list(self.observation_shape)}, got "
                             f"shape {list(x.shape)}; for a batch use agent.network(agent.preprocess(batch))")
        x = self.preprocess(x)
        if not torch.isfinite(x).all():
            raise ValueError("the observation contains NaN or infinite values")
        return int(self.network(x).argmax(1)[0])


def _rlnet_from_policy(policy) -> tuple[RLNet, nn.Module]:
    """Our PPO policies: RLNET itself, its output layer being SB3's action head."""
    net = RLNet(policy.action_net.out_features)
    layers = list(net.children())
    for ours, theirs in zip(layers[:-1], policy.features_extractor.trunk, strict=True):
        ours.load_state_dict(theirs.state_dict())
    layers[-1].load_state_dict(policy.action_net.state_dict())
    return net.eval(), _with_head(net, policy.value_net).eval()


def _with_head(net: RLNet, head: nn.Module) -> nn.Sequential:
    """RLNET's trunk (copied) under another output layer: the value network."""
    return nn.Sequential(*[copy_module(layer) for layer in list(net.children())[:-1]], copy_module(head))


def copy_module(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)


def _sb3_network(policy) -> tuple[nn.Module, nn.Module | None, str]:
    """The score network of an SB3 policy (actor-critic, DQN or QR-DQN), as a plain chain."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    if isinstance(policy, ActorCriticPolicy):
        if isinstance(policy.features_extractor, RLNetExtractor):
            net, value = _rlnet_from_policy(policy)
            return net, value, "actor-critic"
        extractor = copy_module(policy.pi_features_extractor)
        head = copy_module(policy.action_net)
        net = nn.Sequential(extractor, copy_module(policy.mlp_extractor.policy_net), head)
        value_extractor = copy_module(policy.vf_features_extractor)
        value = nn.Sequential(value_extractor, copy_module(policy.mlp_extractor.value_net),
                              copy_module(policy.value_net))
        return net, value, "actor-critic"
    if hasattr(policy, "q_net") and hasattr(policy.q_net, "q_net"):  # DQN
        q = policy.q_net
        return nn.Sequential(copy_module(q.features_extractor), copy_module(q.q_net)), None, "q-values"
    if hasattr(policy, "quantile_net"):  # QR-DQN: Q is the mean over quantiles, a linear map
        q = policy.quantile_net
        layers = list(copy_module(q.quantile_net))
        last = layers[-1]
        n_quantiles = q.n_quantiles
        n_actions = last.out_features // n_quantiles
        mean = nn.Linear(last.in_features, n_actions)
        # SB3-contrib lays the outputs out as (quantile, action).
        mean.weight.data = last.weight.data.view(n_quantiles, n_actions, -1).mean(0)
        mean.bias.data = last.bias.data.view(n_quantiles, n_actions).mean(0)
        return nn.Sequential(copy_module(q.features_extractor), *layers[:-1], mean), None, "q-values"
    raise ValueError(f"unsupported stable-baselines3 policy {type(policy).__name__}; "
                     "expected PPO/A2C (actor-critic), DQN or QR-DQN")


def action_meanings(n_actions: int) -> list[str]:
    """ALE's names for Pong's actions: all 18, or the minimal set of 6."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make("ALE/Pong-v5", full_action_space=n_actions == 18)
    try:
        meanings = env.unwrapped.get_action_meanings()
    finally:
        env.close()
    return meanings if len(meanings) == n_actions else [f"action {i}" for i in range(n_actions)]


def _load_sb3_zip(path: Path) -> Agent:
    from .sb3_zip import read_sb3_zip

    data, params = read_sb3_zip(path)
    if "policy_class" not in data or "policy" not in params:
        raise ValueError(f"{path} holds no stable-baselines3 policy")
    space = data["observation_space"]
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        raise ValueError(f"{path} is not an Atari agent: its observations are {space}, "
                         "not stacked image frames")
    kwargs = data.get("policy_kwargs", {})
    policy = data["policy_class"](space, data["action_space"], lambda _: 0.0, **kwargs)
    policy.load_state_dict(params["policy"])
    policy.eval()
    network, value, kind = _sb3_network(policy)
    network.eval()
    if value is not None:
        value.eval()
    from .engine import read_chain

    read_chain(network, tuple(space.shape))  # non-ReLU or non-chain networks fail here, by name
    n_actions = int(data["action_space"].n)
    scale = 1 / 255 if getattr(policy, "normalize_images", True) else 1.0
    card = {"source": str(path), "observation_shape": list(space.shape), "n_actions": n_actions}
    return Agent(network, action_meanings(n_actions), kind, value, card, scale)


def _load_rl_insens_dir(path: Path) -> Agent:
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
            value = _with_head(network, head)
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{weights_path} holds no readable rl-insens weights ({first_line})") from None
    meanings = card.get("action_meanings") or action_meanings(network.n_actions)
    return Agent(network.eval(), meanings, "actor-critic", value.eval() if value else None, card)


def load_agent(path: str | Path) -> Agent:
    """Load an agent: an rl-insens agent directory, or a stable-baselines3 ``.zip``.

    SB3 agents may be PPO or A2C (their policy head), DQN (the Q-network) or QR-DQN (the mean
    over quantiles), with Atari CNN policies; their network is rebuilt as a plain chain of
    layers the engine accepts.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no agent at {path}")
    if path.is_dir():
        return _load_rl_insens_dir(path)
    return _load_sb3_zip(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_agent(policy, out_dir: str | Path, card: dict) -> Path:
    """Write an rl-insens agent directory from one of our SB3 PPO policies.

    Weights only (RLNET and the value head, no optimiser state), in a file named by their
    sha256, then the model card naming that file: the card is the single commit point, so a
    crash at any moment leaves either the previous agent or the new one, whole.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, _ = _rlnet_from_policy(policy)
    buffer = io.BytesIO()
    torch.save({"rlnet": net.state_dict(), "value_head": policy.value_net.state_dict()}, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    weights_file = f"policy-{digest[:16]}.pt"
    write_bytes(out_dir / weights_file, buffer.getvalue())
    card_path = out_dir / CARD_FILE
    previous = json.loads(card_path.read_text()).get("weights_file") if card_path.exists() else None
    card = {**card, "n_actions": net.n_actions, "observation_shape": list(PONG_OBSERVATION_SHAPE),
            "weights_file": weights_file, "weights_sha256": digest}
    card.setdefault("action_meanings", action_meanings(net.n_actions))
    write_json(card_path, card)
    if previous and previous != weights_file:
        (out_dir / previous).unlink(missing_ok=True)
    return out_dir
