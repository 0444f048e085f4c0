"""Inactive state sensitivity (eqs. 7 and 8) and stability margins, from the squared norms.

Insens = (1/|I|) Σ_{i∈I} v_i ŵ_i / ‖ŵ_i‖² over the inactive hidden neurons I (v_i ≤ 0).
Given the squared norms ‖ŵ_i‖², it is one pass back through the switched network with the
cotangent v_i / ‖ŵ_i‖² / |I| seeded at every inactive neuron. All the cost is in the norms
(:mod:`.norms`).
"""

from __future__ import annotations

import torch

from .switched import SwitchedNetwork


@torch.no_grad()
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
def margins_from_norms(
    net: SwitchedNetwork, norms: dict[int, torch.Tensor]
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Distance from each input to its nearest switching hyperplane, and that neuron.

    The distance from x to hidden neuron i's hyperplane is |v_i| / ‖ŵ_i‖ (the length of
    x − ĉ_i, eq. 6); the margin is the smallest over the hidden neurons whose ŵ is not zero.
    ``norms`` must hold every hidden neuron's, active ones included.
    """
    chain = net.chain
    best = net.output.new_full((net.batch,), float("inf"))
    nearest: list[tuple[str, int]] = [("", -1)] * net.batch
    for i in chain.hidden_indices:
        norm = norms[i].flatten(1)
        distance = torch.where(norm > 0, net.activity(i).flatten(1).abs() / norm.sqrt(), float("inf"))
        value, index = distance.min(1)
        for b in (value < best).nonzero().flatten().tolist():
            nearest[b] = (chain.links[i].name, int(index[b]))
        best = torch.minimum(best, value)
    return best, nearest
