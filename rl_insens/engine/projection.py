"""Switched linear projections (Theorem 1), their centres and decompositions (eqs. 2, 5, 6)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .chain import Chain, check_input, read_chain
from .precision import ieee_float32
from .switched import SwitchedNetwork

DEFAULT_MAX_MEMORY = {"cpu": 256 << 20, "cuda": 4 << 30}
"""Bytes of working memory the engine allows itself per call when not told. A CPU is fastest
with a frame or two at a time (their patches stay in cache; compare `scripts/bench_engine.py
--max-memory`); a GPU with many (fewer kernel launches per frame)."""


def resolve_max_memory(max_memory: int | None, device: torch.device) -> int:
    """``max_memory``, or the default for ``device``; at least 1."""
    if max_memory is None:
        return DEFAULT_MAX_MEMORY.get(device.type, DEFAULT_MAX_MEMORY["cpu"])
    if max_memory < 1:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
    return int(max_memory)


def checked_chain(model: nn.Module, x: torch.Tensor, batched: bool) -> Chain:
    """The model's chain for inputs shaped like ``x``, after checking both (the engine's gate)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if batched and x.dim() < 2:
        raise ValueError(f"expected a batch [B, *input], got shape {list(x.shape)}")
    if batched and x.shape[0] == 0:
        raise ValueError(f"the batch is empty (shape {list(x.shape)}); pass at least one input")
    shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
    chain = read_chain(model, shape, device=x.device)
    check_input(chain, x, model, batched)
    return chain


def vectors_per_chunk(chain: Chain, batch: int, max_memory: int) -> int:
    """How many vectors per sample fit in ``max_memory`` bytes along the whole chain."""
    widest = max(math.prod(link.in_shape) + math.prod(link.out_shape) for link in chain.links)
    return max(1, max_memory // (4 * 2 * widest * batch))


@dataclass
class SwitchedProjection:
    """Neurons of one layer at one input ``x``, each as a linear projection of ``x``.

    ``activity == (weight * x).sum() + bias`` per neuron (eq. 2); ``centre`` is the point
    of the neuron's switching hyperplane nearest to ``x`` (eq. 6).
    """

    layer: str
    neurons: torch.Tensor
    """Flat indices into the layer's output, ``[n]``."""
    weight: torch.Tensor
    """Switched weights ŵ = ∂v/∂x, ``[n, *x.shape]``."""
    bias: torch.Tensor
    """Switched biases b̂ = v − x·ŵ, ``[n]``."""
    activity: torch.Tensor
    """Pre-activations v, ``[n]``."""
    input: torch.Tensor

    @property
    def squared_norm(self) -> torch.Tensor:
        return self.weight.flatten(1).pow(2).sum(1)

    @property
    def centre(self) -> torch.Tensor:
        """ĉ = x − v ŵ / (ŵ·ŵ), eq. 6; where ŵ = 0 there is no hyperplane and ĉ = x."""
        return self.input - self.sensitivity

    @property
    def sensitivity(self) -> torch.Tensor:
        """ω̂ = x − ĉ = v ŵ / (ŵ·ŵ), eq. 7 (zero where ŵ = 0)."""
        norm = self.squared_norm
        scale = torch.where(norm > 0, self.activity / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
        return scale.view(-1, *[1] * self.input.dim()) * self.weight

    @property
    def contributions(self) -> torch.Tensor:
        """(x_j − ĉ_j) ŵ_j per input component, eq. 5; sums to v where ŵ ≠ 0."""
        return self.sensitivity * self.weight


@torch.no_grad()
@ieee_float32()
def switched_projection(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    neurons: torch.Tensor | list[int] | int | None = None,
    max_memory: int | None = None,
) -> SwitchedProjection:
    """The switched linear projection of neurons of ``layer`` at ONE input ``x`` (no batch dim).

    ``layer`` is a Conv2d/Linear module's name in ``model.named_modules()`` (the output layer
    is allowed: its projection is the network's exact local linear model); ``neurons`` are flat
    integer indices into that layer's output or a boolean mask of its size, all of them when None.

    >>> p = switched_projection(net, x, "conv2", neurons=[0, 5])
    >>> torch.allclose((p.weight * x).flatten(1).sum(1) + p.bias, p.activity)
    True
    """
    chain = checked_chain(model, x, batched=False)
    i = chain.index_of(layer)
    size = math.prod(chain.links[i].out_shape)
    neurons = _neuron_indices(neurons, size, layer, x.device)
    if neurons.numel() and (neurons.min() < 0 or neurons.max() >= size):
        raise ValueError(f"neuron indices must lie in [0, {size}) for layer {layer!r}")
    net = SwitchedNetwork(chain, x.unsqueeze(0))
    activity = net.activity(i).flatten()[neurons]
    chunk = vectors_per_chunk(chain, 1, resolve_max_memory(max_memory, x.device))
    weights = []
    for part in neurons.split(chunk):
        seed = torch.zeros(1, len(part), size, device=x.device)
        seed[0, torch.arange(len(part), device=x.device), part] = 1.0
        weights.append(net.pull(seed.view(1, len(part), *chain.links[i].out_shape), i)[0])
    weight = torch.cat(weights) if weights else x.new_zeros(0, *x.shape)
    bias = activity - (weight * x).flatten(1).sum(1)
    return SwitchedProjection(layer, neurons, weight, bias, activity, x)


def _neuron_indices(neurons, size: int, layer: str, device) -> torch.Tensor:
    """Flat indices from None (all), integer indices or a boolean mask; anything else is refused
    rather than rounded."""
    if neurons is None:
        return torch.arange(size, device=device)
    neurons = torch.as_tensor(neurons, device=device)
    if neurons.dtype == torch.bool:
        if neurons.numel() != size:
            raise ValueError(f"a boolean mask of neurons must have the {size} entries of layer {layer!r}, "
                             f"not {neurons.numel()}")
        return neurons.flatten().nonzero().flatten()
    if neurons.is_floating_point() or neurons.is_complex():
        raise ValueError(f"neurons must be integer indices or a boolean mask, got {neurons.dtype} values")
    return neurons.long().flatten()


def decompose(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    neurons: torch.Tensor | list[int] | int | None = None,
) -> torch.Tensor:
    """Per-input-component contributions (x − ĉ)·ŵ to each neuron's activity (eq. 5).

    Shape ``[n, *x.shape]``; each neuron's contributions sum to its activity v.
    """
    return switched_projection(model, x, layer, neurons).contributions


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
    """The network's state at a batch, per hidden layer (Table 3 of the paper)."""

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


@torch.no_grad()
@ieee_float32()
def neuron_state(model: nn.Module, x: torch.Tensor) -> NeuronState:
    """Activities and active masks of every hidden layer for a batch ``x`` of shape ``[B, *input]``."""
    chain = checked_chain(model, x, batched=True)
    net = SwitchedNetwork(chain, x)
    return NeuronState({
        chain.links[i].name: LayerState(net.activity(i), net.activity(i) > 0)
        for i in chain.hidden_indices
    })
