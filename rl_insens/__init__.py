"""rl-insens: see why a ReLU policy acts, through its switched linear projections and Insens."""

from . import bench
from .agents import Agent, load_agent
from .attribution import METHODS, attribute
from .engine import (
    SwitchedModel,
    UnsupportedModelError,
    decompose,
    insens,
    neuron_state,
    switched_projection,
)
from .envs import AtariSettings, make_env, make_pong_env
from .inspector import Inspector
from .nets import RLNet, TwoConv
from .train.callback import InsensCallback
from .wrapper import InsensWrapper

__all__ = [
    "bench",
    "Agent",
    "AtariSettings",
    "make_env",
    "METHODS",
    "RLNet",
    "TwoConv",
    "SwitchedModel",
    "UnsupportedModelError",
    "Inspector",
    "InsensWrapper",
    "InsensCallback",
    "attribute",
    "load_agent",
    "make_pong_env",
    "decompose",
    "insens",
    "neuron_state",
    "switched_projection",
]
