"""What the network does at one frame of play, and at an edited copy of it.

At every frame the whole network *is* one linear map (its switched projection), so an
:class:`Inspection` can show any neuron's projection, how far the frame is from the nearest
switching hyperplane (the stability margin), and which neurons switched between two frames;
:class:`WhatIf` and :class:`Intervened` put a frame next to an edited one. Each is computed
on demand, from one forward pass through the engine's session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .agents import Agent
from .attribution import attribute
from .engine import SwitchedProjection
from .inspection import check_methods


@dataclass
class Inspection:
    """The network at one observation; attribution maps and projections computed on demand."""

    agent: Agent
    observation: np.ndarray
    screen: np.ndarray
    methods: tuple[str, ...]
    _maps: dict = field(default_factory=dict, repr=False)

    @cached_property
    def x(self) -> torch.Tensor:
        """The observation as the network takes it: a batch of one, scaled."""
        return self.agent.preprocess(self.observation)

    @cached_property
    def view(self):
        """The engine's answers at this frame, all from one forward pass (:class:`SwitchedView`)."""
        return self.agent.session(self.x)

    @cached_property
    def logits(self) -> np.ndarray:
        """The network's score per action (policy logits, or Q-values)."""
        return self.view.logits[0].cpu().numpy()

    @property
    def action_probs(self) -> np.ndarray:
        """As the agent's greedy play gives them (see :meth:`Agent.action_probs`)."""
        return self.agent.action_probs(torch.as_tensor(self.logits)[None])[0].numpy()

    @property
    def action(self) -> int:
        """The greedy action."""
        return int(np.argmax(self.logits))

    @cached_property
    def value(self) -> float | None:
        """The value network's estimate, for agents that have one."""
        if self.agent.value_network is None:
            return None
        with torch.no_grad():
            return float(self.agent.value_network(self.x)[0, 0])

    def map(self, method: str) -> np.ndarray:
        """Attribution map of ``method`` (cached), the observation's shape."""
        if method not in self._maps:
            check_methods([method])
            self._maps[method] = attribute(self.agent.session, self.x, method)[0].cpu().numpy()
        return self._maps[method]

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """Every method's attribution map, by method."""
        return {m: self.map(m) for m in self.methods}

    @cached_property
    def neurons(self):
        """Per-layer activity and active mask (:class:`~rl_insens.engine.NeuronState`)."""
        return self.view.neurons

    def projection(self, layer: str, index: int) -> SwitchedProjection:
        """Neuron ``index`` of ``layer`` as a linear map of the frames: ŵ (one image per stacked
        frame), b̂, v and the centre ĉ."""
        return self.view.projection(layer, [index])

    @cached_property
    def stability(self) -> tuple[float, tuple[str, int]]:
        """(margin, (layer, index)): distance to the nearest switching hyperplane, and its neuron."""
        margins, nearest = self.view.stability()
        return float(margins[0]), nearest[0]


def state_change(before: Inspection, after: Inspection) -> dict[str, dict[str, int]]:
    """Neurons that switched on and off between two frames, per hidden layer."""
    change = {}
    for layer, state in after.neurons.layers.items():
        was, now = before.neurons.layers[layer].active, state.active
        change[layer] = {"on": int((now & ~was).sum()), "off": int((was & ~now).sum())}
    return change


@dataclass
class WhatIf:
    """The policy on the original frame and on an edited one."""

    original: Inspection
    edited: Inspection

    @cached_property
    def insens(self) -> tuple[np.ndarray, np.ndarray]:
        """Insens on the original frame and on the edited one."""
        return (self.original.view.insens()[0].cpu().numpy(), self.edited.view.insens()[0].cpu().numpy())


@dataclass
class Intervened(WhatIf):
    """The policy ``NOOPS`` steps after an edit of the game's RAM (``edited``) and without it
    (``original``); ``moved`` says whether every edited object moved on the screen."""

    moves: tuple = ()
    moved: bool = False

    @property
    def logit_change(self) -> float:
        """L2 distance between the policy's outputs with and without the edit (Atrey et al.)."""
        return float(np.linalg.norm(self.edited.logits - self.original.logits))

    @property
    def value_change(self) -> float | None:
        """How far the edit moved the value estimate, for agents that have one."""
        if self.original.value is None:
            return None
        return abs(self.edited.value - self.original.value)


def occlude(observation: np.ndarray, rows: slice, cols: slice, value: int = 0) -> np.ndarray:
    """A copy of a stacked observation with a rectangle set to ``value`` in every frame.

    Args:
        observation: the stacked frames, as the environment gives them.
        rows: the rectangle's rows.
        cols: the rectangle's columns.
        value: the grey level it is set to.

    Returns:
        The edited copy; ``observation`` is left as it was.
    """
    edited = observation.copy()
    edited[..., rows, cols] = value
    return edited


def add_noise(observation: np.ndarray, rows: slice, cols: slice, sigma: float = 30.0,
              seed: int = 0) -> np.ndarray:
    """A copy of a stacked observation with Gaussian noise added inside a rectangle.

    Args:
        observation: the stacked frames, as the environment gives them.
        rows: the rectangle's rows.
        cols: the rectangle's columns.
        sigma: the noise's standard deviation, in grey levels.
        seed: the noise generator's seed.

    Returns:
        The edited copy, clipped to the valid grey levels; ``observation`` is left as it was.
    """
    rng = np.random.default_rng(seed)
    edited = observation.astype(np.float32)
    edited[..., rows, cols] += rng.normal(0, sigma, edited[..., rows, cols].shape)
    return np.clip(edited, 0, 255).astype(observation.dtype)
