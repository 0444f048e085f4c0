"""The switched-projection engine: torch only, nothing of environments, videos or training."""

from .chain import Chain, UnsupportedModelError, read_chain
from .projection import SwitchedProjection
from .reference import insens_reference
from .session import (
    SwitchedModel,
    SwitchedView,
    decompose,
    insens,
    neuron_state,
    session_of,
    stability_margin,
    switched_projection,
)
from .state import LayerState, NeuronState

__all__ = [
    "Chain",
    "LayerState",
    "NeuronState",
    "SwitchedModel",
    "SwitchedProjection",
    "SwitchedView",
    "UnsupportedModelError",
    "decompose",
    "insens",
    "insens_reference",
    "neuron_state",
    "read_chain",
    "session_of",
    "stability_margin",
    "switched_projection",
]
