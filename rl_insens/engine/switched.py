"""The network at a batch of inputs as a fixed linear map: its state, and that map's products.

A forward pass records the state: which ReLUs pass (``v > 0``; the derivative at 0 is 0),
which max-pool input wins each window (PyTorch's own choice, also among ties), and every
layer's activity. With the state fixed the network is linear on its active subnetwork
(Theorem 1), and :meth:`SwitchedNetwork.push` / :meth:`SwitchedNetwork.pull` apply that
linear map (no biases) forwards to tangents and backwards to cotangents, for many vectors per
sample at once. Vectors are laid out ``[B, T, *shape]``: ``T`` vectors for each of ``B`` inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .chain import Chain


class SwitchedNetwork:
    """The state of a chain at a batch ``x`` and the linear maps it switches on."""

    def __init__(self, chain: Chain, x: torch.Tensor) -> None:
        self.chain, self.batch = chain, x.shape[0]
        self.masks: dict[int, torch.Tensor] = {}
        self.winners: dict[int, torch.Tensor] = {}
        self.activities: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            h = x
            for i, link in enumerate(chain.links):
                m = link.module
                if isinstance(m, nn.ReLU):
                    self.masks[i] = h > 0
                    h = torch.relu(h)
                elif isinstance(m, nn.MaxPool2d):
                    h, self.winners[i] = F.max_pool2d(
                        h, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                        return_indices=True,
                    )
                else:
                    h = m.forward(h)  # not m(h): hooks other callers set are not the model
                    if link.is_affine:
                        self.activities[i] = h
        self.output = h

    @property
    def dtype(self) -> torch.dtype:
        return self.output.dtype

    @property
    def device(self) -> torch.device:
        return self.output.device

    def rows(self, rows: slice) -> SwitchedNetwork:
        """The state of samples ``rows`` alone, sharing this one's recorded tensors."""
        part = object.__new__(SwitchedNetwork)
        part.chain, part.batch = self.chain, len(range(*rows.indices(self.batch)))
        part.masks = {k: v[rows] for k, v in self.masks.items()}
        part.winners = {k: v[rows] for k, v in self.winners.items()}
        part.activities = {k: v[rows] for k, v in self.activities.items()}
        part.output = self.output[rows]
        return part

    # The switched linear map, one link at a time.
    def push_link(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """Tangents ``[B, T, *in]`` through link ``i`` of the linearised network."""
        link, m = self.chain.links[i], self.chain.links[i].module
        B, T = t.shape[:2]
        if isinstance(m, nn.Conv2d):
            out = F.conv2d(t.flatten(0, 1), m.weight, None, m.stride, m.padding, m.dilation, m.groups)
            return out.unflatten(0, (B, T))
        if isinstance(m, nn.Linear):
            return t @ m.weight.T
        if isinstance(m, nn.ReLU):
            return t * self.masks[i].unsqueeze(1)
        if isinstance(m, nn.MaxPool2d):
            idx = self.winners[i].flatten(2).unsqueeze(1).expand(B, T, -1, -1)
            return t.flatten(3).gather(3, idx).reshape(B, T, *link.out_shape)
        if isinstance(m, nn.ZeroPad2d):
            return F.pad(t, m.padding)
        return t.reshape(B, T, *link.out_shape)  # Flatten, Identity, eval-mode Dropout

    def pull_link(self, i: int, u: torch.Tensor) -> torch.Tensor:
        """Cotangents ``[B, T, *out]`` back through link ``i`` (the transposed map)."""
        link, m = self.chain.links[i], self.chain.links[i].module
        B, T = u.shape[:2]
        if isinstance(m, nn.Conv2d):
            out = torch.nn.grad.conv2d_input(
                (B * T, *link.in_shape), m.weight, u.flatten(0, 1), m.stride, m.padding,
                m.dilation, m.groups,
            )
            return out.unflatten(0, (B, T))
        if isinstance(m, nn.Linear):
            return u @ m.weight
        if isinstance(m, nn.ReLU):
            return u * self.masks[i].unsqueeze(1)
        if isinstance(m, nn.MaxPool2d):
            c, h, w = link.in_shape
            idx = self.winners[i].flatten(2).unsqueeze(1).expand(B, T, -1, -1)
            grad = u.new_zeros(B, T, c, h * w).scatter_add_(3, idx, u.flatten(3))
            return grad.reshape(B, T, c, h, w)
        if isinstance(m, nn.ZeroPad2d):
            return F.pad(u, [-p for p in m.padding])
        return u.reshape(B, T, *link.in_shape)

    def pull(self, u: torch.Tensor, start: int, stop: int = 0) -> torch.Tensor:
        """Cotangents at the output of link ``start`` back to the input of link ``stop``."""
        for i in range(start, stop - 1, -1):
            u = self.pull_link(i, u)
        return u

    def activity(self, i: int) -> torch.Tensor:
        """Pre-activations ``v`` of affine link ``i``, ``[B, *out_shape]``."""
        return self.activities[i]
