"""A local web page over a recorded run: frames, method panels, plots and a neuron drill-down."""

from .server import RunData, RunError, serve

__all__ = ["RunData", "RunError", "serve"]
