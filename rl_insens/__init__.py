"""rl-insens: see why a ReLU policy acts, through its switched linear projections and Insens."""

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
    "METHODS",
    "RLNet",
    "TwoConv",
    "UnsupportedModelError",
    "attribute",
    "decompose",
    "insens",
    "neuron_state",
    "switched_projection",
]
