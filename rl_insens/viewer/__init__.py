"""A local web page over a recorded run: frames, method panels, plots and a neuron drill-down."""

from .data import RunData, RunError
from .server import serve

__all__ = ["RunData", "RunError", "serve"]
