"""The active units at the cut, and their ŵ written out in input space where that pays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .plan import Geometry
from .switched import SwitchedNetwork


def _slots(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Each element's rank among the elements of its group (groups numbered ``0..n_groups-1``)."""
    sorted_group, order = torch.sort(group, stable=True)
    counts = torch.bincount(group, minlength=n_groups)
    slot = torch.empty_like(group)
    slot[order] = torch.arange(len(group), device=group.device) - (counts.cumsum(0) - counts)[sorted_group]
    return slot


@dataclass(frozen=True)
class _CutUnits:
    """The active cut units of a batch: sample ``b``, channel ``c`` and position ``(y, x)`` of
    each, numbered ``0..n-1`` within its sample; ``n_max`` the most."""

    b: torch.Tensor
    c: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    number: torch.Tensor
    n_max: int

    @classmethod
    def of(cls, active: torch.Tensor, position_major: bool = False) -> _CutUnits:
        """From the ``[B, C, H, W]`` mask of active units; numbered position by position in
        raster order when ``position_major`` (a row of positions is then a run of numbers)."""
        if position_major:
            b, y, x, c = active.permute(0, 2, 3, 1).nonzero(as_tuple=True)
        else:
            b, c, y, x = active.nonzero(as_tuple=True)
        number = _slots(b, active.shape[0])
        return cls(b, c, y, x, number, int(number.max()) + 1 if len(number) else 0)


@dataclass(frozen=True)
class _InputSpace:
    """The active cut units' ŵ written out in input space, ``vectors [B, n, d]``: for a small
    input, cheaper than their Gram (``n² d``) when only linear layers follow the cut."""

    vectors: torch.Tensor

    @classmethod
    def of(cls, patches: torch.Tensor, geo: Geometry, units: _CutUnits, in_shape) -> _InputSpace:
        B, ci, ry, rx = patches.shape[0], *patches.shape[3:6]
        (oy, ox), (sy, sx) = geo.offset, geo.stride
        _, h, w = in_shape
        H, W = patches.shape[1:3]
        canvas = patches.new_zeros(B, units.n_max, ci, max(h + oy, (H - 1) * sy) + ry,
                                   max(w + ox, (W - 1) * sx) + rx)  # room for every patch
        number = units.number
        top, left = units.y * sy, units.x * sx  # canvas coordinates: input row + oy
        r = torch.arange(ry, device=patches.device)
        c = torch.arange(rx, device=patches.device)
        rows = (top[:, None] + r)[:, None, :, None].expand(-1, ci, -1, rx)
        cols = (left[:, None] + c)[:, None, None, :].expand(-1, ci, ry, -1)
        chans = torch.arange(ci, device=patches.device)[None, :, None, None].expand_as(rows)
        canvas[units.b[:, None, None, None], number[:, None, None, None], chans, rows, cols] = \
            patches[units.b, units.y, units.x, :, :, :, units.c]
        return cls(canvas[:, :, :, oy: oy + h, ox: ox + w].flatten(2))


def _input_space_pays(net: SwitchedNetwork, cut: int, units: _CutUnits) -> bool:
    """Whether to write the cut units' ŵ out in input space rather than form their Gram."""
    later = [net.chain.links[i] for i in range(cut, max(net.chain.hidden_indices) + 1)]
    return all(not isinstance(link.module, nn.Conv2d) for link in later) and \
        math.prod(net.chain.in_shape) <= units.n_max
