"""Receptive-field patches up to the cut.

A conv neuron's ŵ lives in its receptive field, so each unit carries its ŵ as a small patch of
the input; patches are propagated layer by layer (conv, ReLU mask, max-pool winner; zero
padding as an offset), a neuron's squared norm is its patch's, and the Gram of the active cut
units is taken over the pairs whose patches overlap.

Patches are kept channels-last, ``[B, H, W, ci, ry, rx, C]``: unit (c, y, x)'s ŵ is the
``ci x ry x rx`` patch ``P[b, y, x, ..., c]``. Every step then contracts or masks the last
dimension of a contiguous tensor, and the norms reduce the middle ones, with no transposes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cut import _CutUnits, _slots
from .plan import Geometry, _geometries, as_pair
from .switched import SwitchedNetwork

CACHE_BLOCK_BYTES = 2 << 20
"""Size of the pieces of a patch tensor built at once (well inside a core's L2 cache)."""


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
    (sh, sw), (dh, dw) = as_pair(conv.stride), as_pair(conv.dilation)
    top, left = pad[2] + as_pair(conv.padding)[0], pad[0] + as_pair(conv.padding)[1]
    (ho, wo), (kh, kw) = out_hw, as_pair(conv.kernel_size)
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
    (ph, pw), (dh, dw) = as_pair(conv.padding), as_pair(conv.dilation)
    (kh, kw), (ho, wo) = as_pair(conv.kernel_size), out_hw
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
    (kh, kw), (sh, sw) = as_pair(pool.kernel_size), as_pair(pool.stride)
    (ph, pw), (dh, dw) = as_pair(pool.padding), as_pair(pool.dilation)
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


def _patch_stage(net: SwitchedNetwork, n_links: int):
    """Propagate patches through the first ``n_links`` links.

    Returns the patches at the cut, their geometry, when the cut follows a ReLU its mask
    ``[B, H, W, C]`` of active units (the patches are then left unmasked: only the active
    ones are read), and the squared norms of the hidden conv layers passed. Zero padding is
    carried as a pending offset, never as a padded copy.
    """
    chain = net.chain
    B = net.batch
    found = {}
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
                found[k] = first_norms.expand(B, *first_norms.shape[1:])
        elif isinstance(m, nn.Conv2d):
            (P, conv_norms), pad = _conv_patches(P, geo, new, m, out_hw, pad), (0, 0, 0, 0)
            if k in hidden:
                found[k] = conv_norms
        else:  # ReLU or MaxPool: they need the patches and their padding in place
            if P is None:
                P = _input_patches(valid, chain.in_shape[0], B)
            if any(pad):
                P, pad = _pad_spatial(P, *pad), (0, 0, 0, 0)
            if isinstance(m, nn.MaxPool2d):
                P = _pool_patches(P, geo, new, m, net.winners[k], out_hw)
            elif k == n_links - 1:
                active = net.masks[k].permute(0, 2, 3, 1)
            else:
                P = P * net.masks[k].permute(0, 2, 3, 1)[:, :, :, None, None, None].to(P.dtype)
        geo = new
    if any(pad):
        P = _pad_spatial(P, *pad)
    return P, geo, active, found


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
