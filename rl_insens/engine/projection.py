"""Switched linear projections (Theorem 1), their centres and decompositions (eqs. 2, 5, 6)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .chain import Chain
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


def vectors_per_chunk(chain: Chain, batch: int, max_memory: int, item_size: int = 4) -> int:
    """How many vectors per sample fit in ``max_memory`` bytes along the whole chain."""
    widest = max(math.prod(link.in_shape) + math.prod(link.out_shape) for link in chain.links)
    return max(1, max_memory // (item_size * 2 * widest * batch))


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
def project(
    net: SwitchedNetwork, x: torch.Tensor, layer: str, neurons: torch.Tensor | list[int] | int | None,
    max_memory: int,
) -> SwitchedProjection:
    """Theorem 1 for neurons of ``layer`` at the one input ``x`` of ``net`` (a one-sample state).

    Each ŵ is the neuron's unit cotangent pulled back through the switched network; b̂ then
    follows from v = x·ŵ + b̂ (eq. 2).
    """
    chain = net.chain
    i = chain.index_of(layer)
    size = math.prod(chain.links[i].out_shape)
    neurons = _neuron_indices(neurons, size, layer, x.device)
    if neurons.numel() and (neurons.min() < 0 or neurons.max() >= size):
        raise ValueError(f"neuron indices must lie in [0, {size}) for layer {layer!r}")
    activity = net.activity(i).flatten()[neurons]
    weights = []
    for part in neurons.split(vectors_per_chunk(chain, 1, max_memory, x.element_size())):
        seed = x.new_zeros(1, len(part), size)
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
