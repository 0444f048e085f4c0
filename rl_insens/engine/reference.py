"""Slow, obviously right Insens: the full Jacobian of every hidden pre-activation by autograd.

Used to check the fast engine (tests) and as the naive baseline (benchmarks). The Jacobian is
taken row block by row block with ``torch.autograd.grad``, so memory stays bounded.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .chain import AFFINE
from .precision import ieee_float32


def hidden_jacobian(model: nn.Module, x: torch.Tensor, dtype=torch.float64, rows: int = 512):
    """Yield ``(activity, jacobian)`` blocks of the hidden pre-activations at ONE input ``x``.

    ``jacobian`` is ``[n, *x.shape]`` (rows of ∂v/∂x); the output layer is left out.
    """
    model = copy.deepcopy(model).to(dtype)
    outputs: list[torch.Tensor] = []
    affine = [m for m in model.modules() if isinstance(m, AFFINE)]
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.clone())) for m in affine]
    x = x.detach().to(dtype).unsqueeze(0).requires_grad_(True)
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    hidden = torch.cat([out.flatten() for out in outputs[:-1]])
    eye_rows = torch.eye(rows, dtype=dtype, device=x.device)
    for start in range(0, hidden.numel(), rows):
        n = min(rows, hidden.numel() - start)
        seeds = torch.zeros(n, hidden.numel(), dtype=dtype, device=x.device)
        seeds[:, start:start + n] = eye_rows[:n, :n]
        (jac,) = torch.autograd.grad(hidden, x, seeds, retain_graph=True, is_grads_batched=True)
        yield hidden[start:start + n].detach(), jac[:, 0]


@ieee_float32()
def insens_reference(model: nn.Module, x: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Eq. 8 for a batch ``x`` from full Jacobians; returns ``x``'s dtype."""
    results = []
    for sample in x:
        total = torch.zeros_like(sample, dtype=dtype)
        n_inactive = 0
        for v, jac in hidden_jacobian(model, sample, dtype):
            norm = jac.flatten(1).pow(2).sum(1)
            inactive = v <= 0
            n_inactive += int(inactive.sum())
            keep = inactive & (norm > 0)
            total += torch.einsum("n,n...->...", v[keep] / norm[keep], jac[keep])
        results.append(total / max(n_inactive, 1))
    return torch.stack(results).to(x.dtype)
