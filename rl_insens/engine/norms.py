"""Exact squared norms ‖ŵ_i‖² of every hidden neuron: the whole cost of Insens.

Two exact ideas, combined at a *cut* (a tensor of the chain chosen by estimated cost):

* **Receptive-field patches** before the cut. A conv neuron's ŵ lives in its receptive field,
  so each unit carries its ŵ as a small patch of the input; patches are propagated layer by
  layer (conv, ReLU mask, max-pool winner; zero padding as an offset) and a neuron's squared
  norm is its patch's.
* **Gram after the cut.** With H = the Gram matrix of the active cut units' ŵ vectors (only
  pairs whose patches overlap are multiplied), a later neuron with Jacobian row u w.r.t.
  those units has ``‖ŵ‖² = uᵀ H u``. The rows u are read off the next affine layer's weights
  and pushed as matrices through later layers; a conv layer's forms are taken per output
  position over the few cut units its receptive field holds.

Cutting at the input (no patches, H = identity) is plain forward mode, which wins for small
inputs; patches and a later cut win for large ones (Pong).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .switched import SwitchedNetwork
from .window_gram import (
    conv_pair_norms_and_gram,
    conv_then_linear_forms,
    match_conv_pair,
    match_conv_then_linear,
    window_floats,
    windows_of,
)

CACHE_BLOCK_BYTES = 2 << 20
"""Size of the pieces of a patch tensor built at once (well inside a core's L2 cache)."""
ASSUMED_ACTIVE_FRACTION = 0.35
"""Fraction of cut units taken as active when planning (the paper saw 17-32%)."""


@dataclass(frozen=True)
class Geometry:
    """Where each unit's patch sits: unit (y, x) covers input rows from y*stride - offset."""

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


# ----- planning --------------------------------------------------------------------------
def _local_prefix(net: SwitchedNetwork) -> int:
    """Number of leading links that patches can follow (spatial layers only)."""
    links = net.chain.links
    if len(net.chain.in_shape) != 3:
        return 0
    for k, link in enumerate(links):
        m = link.module
        if isinstance(m, nn.Conv2d) and m.groups == 1 and isinstance(m.padding, tuple):
            continue
        if isinstance(m, (nn.ReLU, nn.ZeroPad2d, nn.Identity, nn.Dropout)) and len(link.out_shape) == 3:
            continue
        if isinstance(m, nn.MaxPool2d):
            continue
        return k
    return len(links)


def _geometries(net: SwitchedNetwork, n_links: int) -> list[Geometry]:
    """Patch geometry of the output of each of the first ``n_links`` links."""
    geo = Geometry((1, 1), (1, 1), (0, 0))
    out = []
    for link in net.chain.links[:n_links]:
        m = link.module
        if isinstance(m, nn.ZeroPad2d):
            left, _, top, _ = m.padding
            geo = Geometry(geo.size, geo.stride, (geo.offset[0] + top * geo.stride[0],
                                                  geo.offset[1] + left * geo.stride[1]))
        elif isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s = _pair(m.kernel_size), _pair(m.stride)
            p, d = _pair(m.padding), _pair(m.dilation)
            geo = Geometry(
                tuple(geo.size[j] + d[j] * (k[j] - 1) * geo.stride[j] for j in range(2)),
                tuple(geo.stride[j] * s[j] for j in range(2)),
                tuple(geo.offset[j] + p[j] * geo.stride[j] for j in range(2)),
            )
        out.append(geo)
    return out


def _forward_cost(link) -> int:
    """Multiply-adds of one tangent through a link of the linearised network."""
    m = link.module
    if isinstance(m, nn.Conv2d):
        return math.prod(link.out_shape) * (m.in_channels // m.groups) * math.prod(_pair(m.kernel_size))
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    return math.prod(link.out_shape)


def valid_cuts(net: SwitchedNetwork) -> list[int]:
    """Cuts the engine can make: the input (0), or after a ReLU/max-pool that patches reach."""
    links, last_hidden = net.chain.links, max(net.chain.hidden_indices)
    local = min(_local_prefix(net), last_hidden + 1)
    return [0] + [k + 1 for k in range(local) if isinstance(links[k].module, (nn.ReLU, nn.MaxPool2d))]


def plan_cut(net: SwitchedNetwork, max_memory: int) -> int:
    """The cut with the least estimated multiply-adds (0: plain forward mode)."""
    chain = net.chain
    hidden = chain.hidden_indices
    cuts = valid_cuts(net)
    geos = _geometries(net, max(cuts))
    in_channels, alpha = chain.in_shape[0], ASSUMED_ACTIVE_FRACTION

    def cost(cut: int) -> float:
        if cut == 0:
            d = math.prod(chain.in_shape)
            return d * sum(_forward_cost(link) for link in chain.links[: max(hidden) + 1])
        total = 0.0
        for k in range(cut):  # patches up to the cut
            patch = in_channels * math.prod(geos[k].size)
            total += patch * (_forward_cost(chain.links[k]) if chain.links[k].is_affine
                              else math.prod(chain.links[k].out_shape))
        c, h, w = chain.links[cut - 1].out_shape
        n = c * h * w
        if 4 * n * n > max_memory:
            return math.inf  # the cut's Gram matrix would not fit
        reach = [math.ceil(geos[cut - 1].size[j] / geos[cut - 1].stride[j]) for j in range(2)]
        total += h * w * (2 * reach[0] - 1) * (2 * reach[1] - 1) * (alpha * c) ** 2 * patch / 2
        first_affine = next(i for i in range(cut, len(chain.links)) if chain.links[i].is_affine)
        for i in range(first_affine + 1, max(hidden) + 1):  # pushing the active units' columns
            total += alpha * n * _forward_cost(chain.links[i])
        for i in (i for i in hidden if i >= cut):  # the quadratic forms
            total += (1 - alpha) * math.prod(chain.links[i].out_shape) * (alpha * n) ** 2
        return total

    return min(cuts, key=cost)


# ----- receptive-field patches -----------------------------------------------------------
# Patches are kept channels-last, ``[B, H, W, ci, ry, rx, C]``: unit (c, y, x)'s ŵ is the
# ``ci x ry x rx`` patch ``P[b, y, x, ..., c]``. Every step then contracts or masks the last
# dimension of a contiguous tensor, and the norms reduce the middle ones, with no transposes.
def _input_patches(valid: torch.Tensor, channels: int, batch: int) -> torch.Tensor:
    """Each input unit's ŵ as a 1x1 patch: the unit vector of its channel (zero on padding)."""
    eye = torch.eye(channels, device=valid.device, dtype=valid.dtype).view(1, 1, 1, channels, 1, 1, channels)
    patches = eye * valid[0, 0][None, :, :, None, None, None, None]
    return patches.expand(batch, *patches.shape[1:]).clone()


def _pad_spatial(P: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    return F.pad(P, (0, 0) * 4 + (left, right, top, bottom)) if left or right or top or bottom else P


def _conv_patches(P: torch.Tensor, geo: Geometry, new: Geometry, conv: nn.Conv2d, out_hw,
                  pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Each output unit's patch: its kernel's weighted sum of the input units' shifted patches;
    also their squared norms ``[B, O, ho, wo]``.

    ``pad`` (left, right, top, bottom) is zero padding of ``P``'s grid still to be applied:
    taps that land on padding are skipped instead of multiplying a padded copy. On a CPU,
    output rows are built a block at a time, small enough to stay in cache while the taps
    accumulate and the norms are read off: memory traffic, not arithmetic, bounds this step
    there. On a GPU the whole output is one block: kernel launches are what cost there.
    """
    B, H, W, ci, ry, rx, _ = P.shape
    (sh, sw), (dh, dw) = _pair(conv.stride), _pair(conv.dilation)
    top, left = pad[2] + _pair(conv.padding)[0], pad[0] + _pair(conv.padding)[1]
    (ho, wo), (kh, kw) = out_hw, _pair(conv.kernel_size)
    out = P.new_empty(B, ho, wo, ci, *new.size, conv.out_channels)
    norms = P.new_empty(B, ho, wo, conv.out_channels)
    block_rows = ho if P.is_cuda else max(1, CACHE_BLOCK_BYTES // (out[:, 0].numel() * out.element_size()))
    for start in range(0, ho, block_rows):
        stop = min(ho, start + block_rows)
        block = out[:, start:stop]
        block.zero_()
        for a in range(kh):
            y0, y1 = _tap_range(a * dh - top, sh, H, ho)
            y0, y1 = max(y0, start), min(y1, stop)
            for b in range(kw):
                x0, x1 = _tap_range(b * dw - left, sw, W, wo)
                if y0 >= y1 or x0 >= x1:
                    continue
                r0, c0 = y0 * sh + a * dh - top, x0 * sw + b * dw - left
                taps = P[:, r0: r0 + (y1 - y0 - 1) * sh + 1: sh, c0: c0 + (x1 - x0 - 1) * sw + 1: sw]
                oy, ox = a * dh * geo.stride[0], b * dw * geo.stride[1]
                target = block[:, y0 - start:y1 - start, x0:x1, :, oy:oy + ry, ox:ox + rx]
                target += taps @ conv.weight[:, :, a, b].T
        norms[:, start:stop] = block.square().sum((3, 4, 5))
    return out, norms.permute(0, 3, 1, 2)


def _tap_range(shift: int, stride: int, size: int, n_out: int) -> tuple[int, int]:
    """Outputs ``y`` whose tap reads input row ``y * stride + shift`` inside ``[0, size)``."""
    first = max(0, -(shift // stride))
    last = min(n_out, (size - 1 - shift) // stride + 1)
    return first, max(first, last)


def _first_conv_patches(valid: torch.Tensor, conv: nn.Conv2d, new: Geometry, out_hw,
                        batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv reading the input directly: each patch is the kernel, cut off outside the image
    (``valid``, ``[1, 1, H, W]``, is 1 on the image and 0 on zero padding). Also the patches'
    squared norms, ``[1, O, ho, wo]``, summed from the squared kernel without forming them."""
    (ph, pw), (dh, dw) = _pair(conv.padding), _pair(conv.dilation)
    (kh, kw), (ho, wo) = _pair(conv.kernel_size), out_hw
    windows = F.unfold(F.pad(valid, (pw, pw, ph, ph)), (kh, kw), (dh, dw), 0, conv.stride)
    norms = (conv.weight.square().sum(1).flatten(1) @ windows[0]).view(1, -1, ho, wo)
    windows = windows.view(kh, kw, ho, wo).permute(2, 3, 0, 1)[None, :, :, None, :, :, None]
    kernel = conv.weight.permute(1, 2, 3, 0).contiguous() * windows  # [1, ho, wo, ci, kh, kw, O], O innermost
    if (dh, dw) != (1, 1):
        spread = kernel.new_zeros(*kernel.shape[:4], *new.size, kernel.shape[-1])
        spread[:, :, :, :, ::dh, ::dw] = kernel
        kernel = spread
    return kernel.expand(batch, *kernel.shape[1:]), norms


def _pool_patches(P: torch.Tensor, geo: Geometry, new: Geometry, pool: nn.MaxPool2d, winners, out_hw):
    """Each window's patch is its winner's (the index recorded in the forward pass), shifted."""
    B, H, W, ci, ry, rx, C = P.shape
    (kh, kw), (sh, sw) = _pair(pool.kernel_size), _pair(pool.stride)
    (ph, pw), (dh, dw) = _pair(pool.padding), _pair(pool.dilation)
    ho, wo = out_hw
    # Pad generously so every window tap indexes inside the tensor (ceil mode reaches past the end).
    extra_h = max(0, sh * (ho - 1) + dh * (kh - 1) + 1 - (H + 2 * ph))
    extra_w = max(0, sw * (wo - 1) + dw * (kw - 1) + 1 - (W + 2 * pw))
    Pp = _pad_spatial(P, pw, pw + extra_w, ph, ph + extra_h)
    winners = winners.permute(0, 2, 3, 1)  # [B, ho, wo, C]
    wy, wx = winners // W, winners % W  # winner's input position
    base_y = torch.arange(ho, device=P.device).view(1, ho, 1, 1) * sh - ph
    base_x = torch.arange(wo, device=P.device).view(1, 1, wo, 1) * sw - pw
    out = P.new_zeros(B, ho, wo, ci, *new.size, C)
    for a in range(kh):
        for b in range(kw):
            chosen = ((wy == base_y + a * dh) & (wx == base_x + b * dw)).to(P.dtype)
            taps = Pp[:, a * dh: a * dh + sh * (ho - 1) + 1: sh, b * dw: b * dw + sw * (wo - 1) + 1: sw]
            y0, x0 = a * dh * geo.stride[0], b * dw * geo.stride[1]
            out[:, :, :, :, y0:y0 + ry, x0:x0 + rx] += taps * chosen[:, :, :, None, None, None]
    return out


def _patch_stage(net: SwitchedNetwork, n_links: int, norms: dict, rows: slice):
    """Propagate patches through the first ``n_links`` links for samples ``rows``.

    Returns the patches at the cut, their geometry and, when the cut follows a ReLU, its mask
    ``[B, H, W, C]`` of active units (the patches are then left unmasked: only the active
    ones are read). Zero padding is carried as a pending offset, never as a padded copy.
    """
    chain = net.chain
    B = rows.stop - rows.start
    # While P is None the patches are the input's own unit vectors, 1 on the image, 0 on padding.
    valid = torch.ones(1, 1, *chain.in_shape[1:], device=net.device, dtype=net.dtype)
    P, pad, active = None, (0, 0, 0, 0), None
    geo = Geometry((1, 1), (1, 1), (0, 0))
    geos = _geometries(net, n_links)
    hidden = set(chain.hidden_indices)
    for k in range(n_links):
        link, m, new = chain.links[k], chain.links[k].module, geos[k]
        out_hw = link.out_shape[1:]
        if isinstance(m, (nn.Identity, nn.Dropout)):
            pass
        elif isinstance(m, nn.ZeroPad2d) and P is None:
            valid = F.pad(valid, m.padding)
        elif isinstance(m, nn.ZeroPad2d):
            pad = tuple(p + q for p, q in zip(pad, m.padding, strict=True))
        elif isinstance(m, nn.Conv2d) and P is None:
            P, first_norms = _first_conv_patches(valid, m, new, out_hw, B)
            if k in hidden:
                norms[k][rows] = first_norms
        elif isinstance(m, nn.Conv2d):
            (P, conv_norms), pad = _conv_patches(P, geo, new, m, out_hw, pad), (0, 0, 0, 0)
            if k in hidden:
                norms[k][rows] = conv_norms
        else:  # ReLU or MaxPool: they need the patches and their padding in place
            if P is None:
                P = _input_patches(valid, chain.in_shape[0], B)
            if any(pad):
                P, pad = _pad_spatial(P, *pad), (0, 0, 0, 0)
            if isinstance(m, nn.MaxPool2d):
                P = _pool_patches(P, geo, new, m, net.winners[k][rows], out_hw)
            elif k == n_links - 1:
                active = net.masks[k][rows].permute(0, 2, 3, 1)
            else:
                P = P * net.masks[k][rows].permute(0, 2, 3, 1)[:, :, :, None, None, None].to(P.dtype)
        geo = new
    if any(pad):
        P = _pad_spatial(P, *pad)
    return P, geo, active


def _active_gram(patches: torch.Tensor, geo: Geometry, units: _CutUnits) -> torch.Tensor:
    """Gram matrices ``[B, N, N]`` of each sample's active cut units' ŵ (numbered as ``units``).

    Units at positions p and p + δ overlap only for the few offsets δ within a patch's reach.
    Per offset, every position's active units (padded to the most any position holds) are
    multiplied with its partner position's in one batched product: only active pairs that
    overlap are ever multiplied.
    """
    B, H, W, ci, ry, rx, _ = patches.shape
    s, c, y, x = units.b, units.c, units.y, units.x
    slot = _slots((s * H + y) * W + x, B * H * W)
    stacked = patches.new_zeros(B, H, W, int(slot.max()) + 1 if len(slot) else 1, ci, ry, rx)
    stacked[s, y, x, slot] = patches[s, y, x, :, :, :, c]
    ids = torch.full(stacked.shape[:4], units.n_max, device=patches.device)  # n_max: an empty slot
    ids[s, y, x, slot] = units.number
    gram = patches.new_zeros(B, units.n_max + 1, units.n_max + 1)
    sample = torch.arange(B, device=patches.device).view(B, 1, 1, 1, 1)
    reach = [min(math.ceil(geo.size[j] / geo.stride[j]), (H, W)[j]) for j in range(2)]
    for dy in range(reach[0]):
        for dx in range(-reach[1] + 1, reach[1]):
            if dy == 0 and dx < 0:
                continue  # the other half-plane is the transpose
            oy, ox = dy * geo.stride[0], abs(dx) * geo.stride[1]
            here = (slice(None), slice(0, H - dy), slice(max(0, -dx), W - max(0, dx)))
            there = (slice(None), slice(dy, H), slice(max(0, dx), W + min(0, dx)))
            cols_here, cols_there = (slice(ox, rx), slice(0, rx - ox)) if dx >= 0 else \
                (slice(0, rx - ox), slice(ox, rx))
            a = stacked[here][..., oy:, cols_here].flatten(4)
            b = stacked[there][..., : ry - oy, cols_there].flatten(4)
            block = a @ b.transpose(-1, -2)  # [B, h, w, slots, slots]
            i, j = ids[here][..., :, None], ids[there][..., None, :]
            gram[sample, i, j] = block
            if dy or dx:
                gram[sample, j.transpose(-1, -2), i.transpose(-1, -2)] = block.transpose(-1, -2)
    return gram[:, : units.n_max, : units.n_max]


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


def _slots(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Each element's rank among the elements of its group (groups numbered ``0..n_groups-1``)."""
    sorted_group, order = torch.sort(group, stable=True)
    counts = torch.bincount(group, minlength=n_groups)
    slot = torch.empty_like(group)
    slot[order] = torch.arange(len(group), device=group.device) - (counts.cumsum(0) - counts)[sorted_group]
    return slot


# ----- after the cut ---------------------------------------------------------------------
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
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = (_pair(m.kernel_size), _pair(m.stride), _pair(m.dilation),
                                              _pair(m.padding))
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
    return torch.div(value, divisor, rounding_mode="floor"), torch.remainder(value, divisor)


def _after_cut(net: SwitchedNetwork, cut: int, gram: torch.Tensor | _InputSpace, units: _CutUnits,
               norms: dict, rows: slice, all_neurons: bool) -> None:
    """uᵀ H u for every later hidden neuron, u its row of the map from the cut's active units.

    The rows come from pushing the active units' unit vectors forward: the first affine layer's
    columns are read off its weights, later layers are applied to them as matrices. Samples
    are processed together, each one's units padded to the most any holds (padding rows and
    columns of H are zero, so they add nothing).
    """
    chain = net.chain
    view = net.rows(rows)
    B, (_, H, W) = view.batch, chain.links[cut - 1].out_shape
    positions = torch.zeros(B, units.n_max, dtype=torch.long, device=net.device)
    positions[units.b, units.number] = (units.c * H + units.y) * W + units.x  # padding: unit 0
    real = torch.zeros(B, units.n_max, 1, dtype=net.dtype, device=net.device)
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
                t = torch.zeros(B, units.n_max, math.prod(shape), device=net.device, dtype=net.dtype)
                t.scatter_(2, positions[..., None], real)
                t = t.view(B, units.n_max, *shape)
            if isinstance(link.module, nn.Linear) and outputs is not None:
                t = _push_linear_sparse(link.module, t, outputs)  # nothing is pushed further
            elif isinstance(link.module, nn.Linear):
                t = _push_linear_sparse(link.module, t)
            else:
                t = view.push_link(i, t)
        if link.is_affine and i in net.chain.hidden_indices:
            wanted = torch.ones_like(view.activity(i).flatten(1), dtype=torch.bool) if all_neurons else \
                view.activity(i).flatten(1) <= 0
            if isinstance(gram, _InputSpace):  # ‖ŵ‖² of u's combination of the units' ŵ
                rows_u = t.reshape(B, units.n_max, -1).transpose(1, 2)
                forms = torch.bmm(rows_u, gram.vectors).square().sum(-1)
            else:
                forms = _quadratic_forms(gram, t)
            if outputs is not None:  # the last layer's forms: only for neurons some sample needs
                forms = forms.new_zeros(wanted.shape).index_copy_(1, outputs, forms)
            norms[i][rows] = torch.where(wanted, forms, 0.0).view_as(norms[i][rows])


@torch.no_grad()
def squared_norms(
    net: SwitchedNetwork, max_memory: int, cut: int | None = None, all_neurons: bool = False
) -> dict[int, torch.Tensor]:
    """‖ŵ_i‖² of the hidden neurons, ``{link index: [B, *out_shape]}``.

    Exact for every inactive neuron (v ≤ 0), which is all Insens needs; active neurons past
    the cut are left at zero unless ``all_neurons``.
    """
    chain = net.chain
    B = net.batch
    norms = {i: net.output.new_zeros(B, *chain.links[i].out_shape) for i in chain.hidden_indices}
    cut = plan_cut(net, max_memory) if cut is None else cut
    if cut not in valid_cuts(net):
        raise ValueError(f"cannot cut at {cut}; valid cuts: {valid_cuts(net)}")
    if cut == 0:
        _forward_from_input(net, max_memory, norms)
        return norms
    fits = max(1, max_memory // _bytes_per_sample(net, cut))
    per_chunk = math.ceil(B / math.ceil(B / fits))  # equal chunks: 16 as 8 + 8, not 13 + 3
    for start in range(0, B, per_chunk):
        _chunk_norms(net, cut, norms, slice(start, min(B, start + per_chunk)), all_neurons)
    return norms


def _chunk_norms(net: SwitchedNetwork, cut: int, norms: dict, rows: slice, all_neurons: bool) -> None:
    """The norms of samples ``rows``: windows over the first layer's Gram where the chain starts
    with two convs and the cut follows them, receptive-field patches otherwise."""
    pair = match_conv_pair(net)
    if pair is not None and cut == pair.cut:
        mask = net.masks[cut - 1][rows]
        units = _CutUnits.of(mask, position_major=True)
        number = torch.full(mask.shape, units.n_max, device=net.device)
        number[units.b, units.c, units.y, units.x] = units.number
        gram = conv_pair_norms_and_gram(net, pair, norms, rows, number, units.n_max)
        layers = match_conv_then_linear(net, cut)
        if layers is not None:
            reach = windows_of(net, pair).row_reach
            conv_then_linear_forms(net, cut, layers, gram, number, reach, norms, rows, all_neurons)
            return
        gram = gram[:, :-1, :-1]
    else:
        P, geo, active = _patch_stage(net, cut, norms, rows)
        if cut > max(net.chain.hidden_indices):
            return
        if active is None:  # units whose ŵ is not zero (one with ŵ = 0 would only add a zero row)
            active = P.square().sum((3, 4, 5)) > 0
        units = _CutUnits.of(active.permute(0, 3, 1, 2))  # [B, C, H, W]
        gram = _InputSpace.of(P, geo, units, net.chain.in_shape) if _input_space_pays(net, cut, units) \
            else _active_gram(P, geo, units)
    _after_cut(net, cut, gram, units, norms, rows, all_neurons)


def _bytes_per_sample(net: SwitchedNetwork, cut: int) -> int:
    """Peak working memory of one sample: what sets how many samples go through at once.

    Patch stage, per step: its input patches, its output, the output's squares and one tap's
    product. Gram stage: the cut's patches, their copy sorted into slots and two offset views of
    it, H for the most active cut units any sample has, three copies of the pushed columns,
    and the per-position local Grams of the conv layers.
    """
    pair = match_conv_pair(net)
    if pair is not None and cut == pair.cut:
        return net.output.element_size() * window_floats(net, pair, match_conv_then_linear(net, cut))
    chain, hidden = net.chain, net.chain.hidden_indices
    geos = _geometries(net, cut)
    patches = [chain.in_shape[0] * math.prod(geo.size) * math.prod(link.out_shape)
               for geo, link in zip(geos, chain.links[:cut], strict=True)]
    patch_floats = max(a + 3 * b for a, b in zip([0] + patches, patches, strict=False))
    c, h, w = chain.links[cut - 1].out_shape
    mask = net.masks.get(cut - 1)
    n = int(mask.flatten(1).sum(1).max()) if mask is not None else c * h * w
    later = [chain.links[i] for i in range(cut, max(hidden) + 1) if chain.links[i].is_affine]
    if not later:
        return net.output.element_size() * patch_floats
    widest = max(math.prod(link.out_shape) for link in later)
    local = 0
    for link in later:
        if isinstance(link.module, nn.Conv2d):  # units a position's field holds, at the cut's density
            field = min(c * h * w, link.module.in_channels * math.prod(_pair(link.module.kernel_size)))
            local = max(local, math.prod(link.out_shape[1:]) * (field * n // (c * h * w) + 1) ** 2)
    gram_floats = 4 * patches[-1] + n * n + 3 * n * widest + 2 * local
    return net.output.element_size() * max(patch_floats, gram_floats)


def _forward_from_input(net: SwitchedNetwork, max_memory: int, norms: dict) -> None:
    """Plain forward mode: one-hot input tangents in chunks, squared responses summed."""
    chain = net.chain
    hidden = set(chain.hidden_indices)
    d = math.prod(chain.in_shape)
    device = net.device
    widest = max(math.prod(link.in_shape) + math.prod(link.out_shape) for link in chain.links)
    chunk = max(1, max_memory // (net.output.element_size() * 2 * widest * net.batch))
    for start in range(0, d, chunk):
        T = min(chunk, d - start)
        t = torch.zeros(net.batch, T, d, device=device, dtype=net.dtype)
        t[:, torch.arange(T, device=device), torch.arange(start, start + T, device=device)] = 1.0
        t = t.view(net.batch, T, *chain.in_shape)
        for i in range(max(hidden) + 1):
            t = net.push_link(i, t)
            if i in hidden:
                norms[i] += t.pow(2).sum(1)
