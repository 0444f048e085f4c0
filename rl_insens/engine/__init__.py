"""The switched-projection engine: torch only, nothing of environments, videos or training."""

from .chain import Chain, UnsupportedModelError, read_chain
from .insens import insens, stability_margin
from .projection import (
    LayerState,
    NeuronState,
    SwitchedProjection,
    decompose,
    neuron_state,
    switched_projection,
)
from .reference import insens_reference

__all__ = [
    "Chain",
    "LayerState",
    "NeuronState",
    "SwitchedProjection",
    "UnsupportedModelError",
    "decompose",
    "insens",
    "insens_reference",
    "neuron_state",
    "read_chain",
    "stability_margin",
    "switched_projection",
]
