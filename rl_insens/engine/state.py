"""Which neurons are on: the network's state at a batch (Table 3 of the paper)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerState:
    """One hidden layer at a batch: activities v and which neurons are active (v > 0)."""

    activity: torch.Tensor
    active: torch.Tensor

    @property
    def active_fraction(self) -> torch.Tensor:
        return self.active.flatten(1).float().mean(1)


@dataclass
class NeuronState:
    """The network's state at a batch, per hidden layer."""

    layers: dict[str, LayerState]

    @property
    def n_neurons(self) -> int:
        return sum(s.active[0].numel() for s in self.layers.values())

    @property
    def n_active(self) -> torch.Tensor:
        """Active hidden neurons per sample, ``[B]``."""
        return sum(s.active.flatten(1).sum(1) for s in self.layers.values())

    @property
    def active_fraction(self) -> torch.Tensor:
        """Fraction of hidden neurons active per sample, ``[B]``."""
        return self.n_active.float() / self.n_neurons

    def changes_from(self, before: NeuronState) -> dict[str, dict[str, torch.Tensor]]:
        """Neurons that switched on and off since ``before``, per layer and sample.

        ``{layer: {"on": [B], "off": [B]}}``; ``before`` has this batch's size, or one sample
        that every sample is compared with.
        """
        change = {}
        for layer, state in self.layers.items():
            was, now = before.layers[layer].active.flatten(1), state.active.flatten(1)
            change[layer] = {"on": (now & ~was).sum(1), "off": (was & ~now).sum(1)}
        return change

    def __getitem__(self, rows: slice) -> NeuronState:
        """The state of samples ``rows``."""
        return NeuronState({name: LayerState(s.activity[rows], s.active[rows])
                            for name, s in self.layers.items()})
