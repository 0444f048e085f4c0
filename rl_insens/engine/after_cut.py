"""Gram after the cut: ``‖ŵ‖² = uᵀ H u`` for every later neuron.

With H the Gram matrix of the active cut units' ŵ, a later neuron with Jacobian row u w.r.t.
those units has ``‖ŵ‖² = uᵀ H u``. The rows u are read off the next affine layer's weights and
pushed as matrices through later layers; a conv layer's forms are taken per output position
over the few cut units its receptive field holds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cut import _CutUnits, _InputSpace, _slots
from .plan import as_pair
from .switched import SwitchedNetwork


def _affine_columns(link, shape: tuple[int, ...], index: torch.Tensor) -> torch.Tensor:
    """Columns ``index`` of an affine link's matrix (no bias), ``[T, *out_shape]``.

    The link's response to each unit vector, written down from its weights instead of pushed
    through it: one-hot inputs make a conv or linear layer mostly multiply zeros.
    """
    m = link.module
    if isinstance(m, nn.Linear):
        return m.weight[:, index].T.reshape(len(index), *link.out_shape)
    c_in, h, w = shape
    o, ho, wo = link.out_shape
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = (as_pair(m.kernel_size), as_pair(m.stride), as_pair(m.dilation),
                                              as_pair(m.padding))
    c, y, x = index // (h * w), index // w % h + ph, index % w + pw  # in padded coordinates
    columns = m.weight.new_zeros(len(index), o, ho, wo)
    rows = torch.arange(len(index), device=index.device)
    for a in range(kh):
        py, ry = divmod_tensor(y - a * dh, sh)
        for b in range(kw):
            px, rx = divmod_tensor(x - b * dw, sw)
            ok = (ry == 0) & (rx == 0) & (py >= 0) & (py < ho) & (px >= 0) & (px < wo)
            columns[rows[ok], :, py[ok], px[ok]] = m.weight[:, c[ok], a, b].T
    return columns


def _quadratic_forms(gram: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``uᵀ H u`` for every neuron of a layer, ``[B, n]``; u a neuron's column of ``t`` ``[B, T, *shape]``.

    A conv neuron is reached only by the cut units in its receptive field, so for conv layers
    the forms are taken per sample and output position over just those units (one batched
    product): the dense ``H @ U`` would mostly multiply zeros.
    """
    B, units = t.shape[:2]
    if units == 0:  # no active unit at the cut: every later ŵ is zero
        return t.new_zeros(B, math.prod(t.shape[2:]))
    if t.dim() != 5:
        columns = t.reshape(B, units, -1)
        return (torch.bmm(gram, columns) * columns).sum(1)
    columns = t.flatten(3)  # [B, T, O, P]
    positions = columns.shape[3]
    reaches = columns.abs().amax(2) > 0  # [B, T, P]: unit reaches position
    b, position, unit = reaches.transpose(1, 2).nonzero(as_tuple=True)  # ordered by sample, position
    group = b * positions + position
    slot = _slots(group, B * positions)
    index = torch.full((B * positions, int(slot.max()) + 1 if len(slot) else 1), units, device=t.device)
    index[group, slot] = unit  # units: padding
    sample = torch.arange(B, device=t.device).repeat_interleave(positions)[:, None]
    local_gram = F.pad(gram, (0, 1, 0, 1))[sample[..., None], index[:, :, None], index[:, None, :]]
    where = torch.arange(positions, device=t.device).repeat(B)[:, None]
    local = columns[sample, index.clamp(max=units - 1), :, where] * (index < units)[..., None]  # [B*P, m, O]
    forms = (torch.bmm(local_gram, local) * local).sum(1)  # [B*P, O]
    return forms.view(B, positions, -1).transpose(1, 2).reshape(B, -1)


def _push_linear_sparse(linear: nn.Linear, t: torch.Tensor, outputs: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """``t @ Wᵀ`` reading only the inputs some row reaches: behind a ReLU most are switched off.
    Only the ``outputs`` (indices) are formed when given."""
    reached = (t != 0).flatten(0, 1).any(0).nonzero().squeeze(1)
    weight = linear.weight if outputs is None else linear.weight[outputs]
    return t[..., reached] @ weight[:, reached].T


def divmod_tensor(value: torch.Tensor, divisor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise ``divmod`` of ``value`` by ``divisor``, rounding down, so that negative values
    get a non-negative remainder as with Python's ``divmod``."""
    return torch.div(value, divisor, rounding_mode="floor"), torch.remainder(value, divisor)


def _after_cut(view: SwitchedNetwork, cut: int, gram: torch.Tensor | _InputSpace, units: _CutUnits,
               all_neurons: bool) -> dict[int, torch.Tensor]:
    """uᵀ H u for every later hidden neuron, u its row of the map from the cut's active units.

    The rows come from pushing the active units' unit vectors forward: the first affine layer's
    columns are read off its weights, later layers are applied to them as matrices. Samples
    are processed together, each one's units padded to the most any holds (padding rows and
    columns of H are zero, so they add nothing).
    """
    chain, found = view.chain, {}
    B, (_, H, W) = view.batch, chain.links[cut - 1].out_shape
    positions = torch.zeros(B, units.n_max, dtype=torch.long, device=view.device)
    positions[units.b, units.number] = (units.c * H + units.y) * W + units.x  # padding: unit 0
    real = torch.zeros(B, units.n_max, 1, dtype=view.dtype, device=view.device)
    real[units.b, units.number] = 1.0
    shape, t = chain.links[cut - 1].out_shape, None  # unit vectors, kept as indices until an affine layer
    last = max(chain.hidden_indices)
    for i in range(cut, last + 1):
        link = chain.links[i]
        outputs = None  # for the last hidden layer, if linear: the neurons whose norms are wanted
        if i == last and isinstance(link.module, nn.Linear) and not all_neurons and t is not None:
            outputs = (view.activity(i) <= 0).any(0).nonzero().squeeze(1)
        if t is None and isinstance(link.module, nn.ZeroPad2d):
            left, _, top, _ = link.module.padding
            plane = shape[1] * shape[2]
            c, y, x = positions // plane, positions % plane // shape[2], positions % shape[2]
            shape = link.out_shape
            positions = (c * shape[1] + y + top) * shape[2] + x + left
            continue
        if t is None and isinstance(link.module, (nn.Flatten, nn.Identity, nn.Dropout)):
            shape = link.out_shape
            continue
        if t is None and link.is_affine:
            t = _affine_columns(link, shape, positions.flatten()).unflatten(0, positions.shape)
            t = t * real.view(B, -1, *[1] * (t.dim() - 2))
        else:
            if t is None:  # anything else: materialise the unit vectors and push them
                t = torch.zeros(B, units.n_max, math.prod(shape), device=view.device, dtype=view.dtype)
                t.scatter_(2, positions[..., None], real)
                t = t.view(B, units.n_max, *shape)
            if isinstance(link.module, nn.Linear) and outputs is not None:
                t = _push_linear_sparse(link.module, t, outputs)  # nothing is pushed further
            elif isinstance(link.module, nn.Linear):
                t = _push_linear_sparse(link.module, t)
            else:
                t = view.push_link(i, t)
        if link.is_affine and i in chain.hidden_indices:
            wanted = torch.ones_like(view.activity(i).flatten(1), dtype=torch.bool) if all_neurons else \
                view.activity(i).flatten(1) <= 0
            if isinstance(gram, _InputSpace):  # ‖ŵ‖² of u's combination of the units' ŵ
                rows_u = t.reshape(B, units.n_max, -1).transpose(1, 2)
                forms = torch.bmm(rows_u, gram.vectors).square().sum(-1)
            else:
                forms = _quadratic_forms(gram, t)
            if outputs is not None:  # the last layer's forms: only for neurons some sample needs
                forms = forms.new_zeros(wanted.shape).index_copy_(1, outputs, forms)
            found[i] = torch.where(wanted, forms, 0.0).view(B, *link.out_shape)
    return found
