"""rl-insens: see why a ReLU policy acts, through its switched linear projections and Insens."""

from . import bench
from .agents import make_pong_env
from .attribution import METHODS, attribute
from .engine import (
    UnsupportedModelError,
    decompose,
    insens,
    neuron_state,
    switched_projection,
)
from .nets import RLNet, TwoConv

__all__ = [
    "bench",
    "METHODS",
    "RLNet",
    "TwoConv",
    "UnsupportedModelError",
    "attribute",
    "make_pong_env",
    "decompose",
    "insens",
    "neuron_state",
    "switched_projection",
]
