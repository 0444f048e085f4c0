"""Inactive state sensitivity, eqs. 7 and 8, computed exactly.

Insens = (1/|I|) Σ_{i∈I} v_i ŵ_i / ‖ŵ_i‖² over the inactive hidden neurons I (v_i ≤ 0).
Given the squared norms ‖ŵ_i‖², it is one pass back through the switched network with the
cotangent v_i / ‖ŵ_i‖² / |I| seeded at every inactive neuron. All the cost is in the norms.
"""

from __future__ import annotations

import torch
from torch import nn

from .norms import squared_norms
from .precision import ieee_float32
from .projection import checked_chain, resolve_max_memory
from .switched import SwitchedNetwork


def insens_from_norms(net: SwitchedNetwork, norms: dict[int, torch.Tensor]) -> torch.Tensor:
    """Eq. 8 given the squared norms: one backward pass with weights v / ‖ŵ‖² / |I|."""
    hidden = net.chain.hidden_indices
    inactive = {i: net.activity(i) <= 0 for i in hidden}
    n_inactive = sum(m.flatten(1).sum(1) for m in inactive.values()).clamp_min(1)
    u = None
    for i in range(max(hidden), -1, -1):
        if i in inactive:
            v, norm = net.activity(i), norms[i]
            usable = inactive[i] & (norm > 0)  # ŵ = 0: counted in |I|, contributes nothing
            coef = torch.where(usable, v / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
            coef = coef / n_inactive.view(-1, *[1] * (coef.dim() - 1))
            u = coef.unsqueeze(1) if u is None else u + coef.unsqueeze(1)
        u = net.pull_link(i, u)
    return u[:, 0]


@torch.no_grad()
@ieee_float32()
def insens(model: nn.Module, x: torch.Tensor, max_memory: int | None = None) -> torch.Tensor:
    """Insens (eq. 8) of ``model`` at each input of the batch ``x``, exactly; same shape as ``x``.

    Hidden neurons are the outputs of every Conv2d/Linear but the output layer; the inactive
    ones have activity v ≤ 0. Runs on the device of ``model`` and ``x``; ``max_memory`` bounds
    the working memory in bytes (default: 256 MiB on a CPU, 4 GiB on a GPU).
    """
    chain = checked_chain(model, x, batched=True)
    if not chain.hidden_indices:
        return torch.zeros_like(x)
    net = SwitchedNetwork(chain, x)
    return insens_from_norms(net, squared_norms(net, resolve_max_memory(max_memory, x.device)))


@torch.no_grad()
@ieee_float32()
def stability_margin(
    model: nn.Module, x: torch.Tensor, max_memory: int | None = None
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """How far each input of the batch can move before the network's linear map changes.

    The distance from x to hidden neuron i's switching hyperplane is |v_i| / ‖ŵ_i‖ (the
    length of x − ĉ_i, eq. 6); the margin is the smallest over all hidden neurons whose ŵ
    is not zero. Returns the margins ``[B]`` and, per sample, the nearest neuron as
    ``(layer name, flat index)``.
    """
    chain = checked_chain(model, x, batched=True)
    net = SwitchedNetwork(chain, x)
    norms = squared_norms(net, resolve_max_memory(max_memory, x.device), all_neurons=True)
    best = torch.full((x.shape[0],), float("inf"), device=x.device)
    nearest: list[tuple[str, int]] = [("", -1)] * x.shape[0]
    for i in chain.hidden_indices:
        norm = norms[i].flatten(1)
        distance = net.activity(i).flatten(1).abs() / norm.sqrt()
        distance = torch.where(norm > 0, distance, float("inf"))
        value, index = distance.min(1)
        for b in (value < best).nonzero().flatten().tolist():
            nearest[b] = (chain.links[i].name, int(index[b]))
        best = torch.minimum(best, value)
    return best, nearest
