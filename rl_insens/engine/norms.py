"""Exact squared norms ‖ŵ_i‖² of every hidden neuron: the whole cost of Insens.

Two exact ideas, combined at a *cut* (a tensor of the chain chosen by estimated cost):

* **Receptive-field patches** before the cut. A conv neuron's ŵ lives in its receptive field,
  so each unit carries its ŵ as a small patch of the input; patches are propagated layer by
  layer (pad, conv, ReLU mask, max-pool winner) and a neuron's squared norm is its patch's.
* **Gram after the cut.** With H = the Gram matrix of the active cut units' ŵ vectors (from
  overlapping patches), a later neuron with Jacobian row u w.r.t. those units has
  ``‖ŵ‖² = uᵀ H u``; the rows u of all later layers come from one forward-mode pass of one-hot
  tangents of the active cut units, and the quadratic forms are dense matrix products.

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

GEMM_ADVANTAGE = 1.5
"""How many times faster a multiply-add runs in one large matrix product than in block gathers."""
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
        total += h * w * (2 * reach[0] - 1) * (2 * reach[1] - 1) * c * c * patch / 2
        first_affine = next(i for i in range(cut, len(chain.links)) if chain.links[i].is_affine)
        for i in range(first_affine + 1, max(hidden) + 1):  # pushing the active units' columns
            total += alpha * n * _forward_cost(chain.links[i])
        for i in (i for i in hidden if i >= cut):  # the quadratic forms
            total += (1 - alpha) * math.prod(chain.links[i].out_shape) * (alpha * n) ** 2
        return total

    return min(cuts, key=cost)


# ----- receptive-field patches -----------------------------------------------------------
def _input_patches(x_shape: tuple[int, ...], batch: int, device) -> torch.Tensor:
    """Each input unit's ŵ as a 1x1 patch: the unit vector of its channel."""
    c, h, w = x_shape
    eye = torch.eye(c, device=device).view(1, c, 1, 1, c, 1, 1)
    return eye.expand(batch, c, h, w, c, 1, 1).clone()


def _conv_patches(P: torch.Tensor, geo: Geometry, new: Geometry, conv: nn.Conv2d, out_hw) -> torch.Tensor:
    """Each output unit's patch: its kernel's weighted sum of the input units' shifted patches."""
    B, C, H, W, ci, ry, rx = P.shape
    (ph, pw), (sh, sw), (dh, dw) = _pair(conv.padding), _pair(conv.stride), _pair(conv.dilation)
    P = F.pad(P, (0, 0, 0, 0, 0, 0, pw, pw, ph, ph)) if ph or pw else P
    channels_last = P.permute(0, 2, 3, 4, 5, 6, 1).contiguous()  # the products contract channels
    ho, wo = out_hw
    kh, kw = _pair(conv.kernel_size)
    out = P.new_zeros(B, ho, wo, ci, *new.size, conv.out_channels)
    rows, cols = sh * (ho - 1) + 1, sw * (wo - 1) + 1
    for a in range(kh):
        for b in range(kw):
            taps = channels_last[:, a * dh: a * dh + rows: sh, b * dw: b * dw + cols: sw]
            y0, x0 = a * dh * geo.stride[0], b * dw * geo.stride[1]
            out[:, :, :, :, y0:y0 + ry, x0:x0 + rx] += taps @ conv.weight[:, :, a, b].T
    return out.permute(0, 6, 1, 2, 3, 4, 5)


def _first_conv_patches(P: torch.Tensor, conv: nn.Conv2d, new: Geometry, out_hw) -> torch.Tensor:
    """A conv reading the input directly: each patch is the kernel, cut off outside the image."""
    valid = P[:1, 0, :, :, 0, 0, 0][:, None]  # [1, 1, H, W]: 1 on the image, 0 on zero pads
    (ph, pw), (dh, dw) = _pair(conv.padding), _pair(conv.dilation)
    (kh, kw), (ho, wo) = _pair(conv.kernel_size), out_hw
    windows = F.unfold(F.pad(valid, (pw, pw, ph, ph)), (kh, kw), (dh, dw), 0, conv.stride)
    windows = windows.view(kh, kw, ho, wo).permute(2, 3, 0, 1)[None, None, :, :, None]
    kernel = conv.weight[None, :, None, None] * windows  # [1, O, ho, wo, ci, kh, kw]
    if (dh, dw) != (1, 1):
        spread = kernel.new_zeros(*kernel.shape[:5], *new.size)
        spread[..., ::dh, ::dw] = kernel
        kernel = spread
    return kernel.expand(P.shape[0], *kernel.shape[1:])


def _pool_patches(P: torch.Tensor, geo: Geometry, new: Geometry, pool: nn.MaxPool2d, winners, out_hw):
    B, C, H, W, ci, ry, rx = P.shape
    (kh, kw), (sh, sw) = _pair(pool.kernel_size), _pair(pool.stride)
    (ph, pw), (dh, dw) = _pair(pool.padding), _pair(pool.dilation)
    ho, wo = out_hw
    # Pad generously so every window tap indexes inside the tensor (ceil mode reaches past the end).
    extra_h = max(0, sh * (ho - 1) + dh * (kh - 1) + 1 - (H + 2 * ph))
    extra_w = max(0, sw * (wo - 1) + dw * (kw - 1) + 1 - (W + 2 * pw))
    Pp = F.pad(P, (0, 0, 0, 0, 0, 0, pw, pw + extra_w, ph, ph + extra_h))
    wy, wx = winners // W, winners % W  # winner's input position, [B, C, ho, wo]
    base_y = torch.arange(ho, device=P.device).view(1, 1, ho, 1) * sh - ph
    base_x = torch.arange(wo, device=P.device).view(1, 1, 1, wo) * sw - pw
    out = P.new_zeros(B, C, ho, wo, ci, *new.size)
    for a in range(kh):
        for b in range(kw):
            chosen = ((wy == base_y + a * dh) & (wx == base_x + b * dw)).to(P.dtype)
            taps = Pp[:, :, a * dh: a * dh + sh * (ho - 1) + 1: sh, b * dw: b * dw + sw * (wo - 1) + 1: sw]
            y0, x0 = a * dh * geo.stride[0], b * dw * geo.stride[1]
            out[..., y0:y0 + ry, x0:x0 + rx] += taps * chosen[..., None, None, None]
    return out


def _patch_stage(net: SwitchedNetwork, n_links: int, norms: dict, rows: slice) -> torch.Tensor:
    """Propagate patches through the first ``n_links`` links for samples ``rows``."""
    chain = net.chain
    device = next(iter(net.activities.values())).device
    B = rows.stop - rows.start
    P = _input_patches(chain.in_shape, B, device)
    geo = Geometry((1, 1), (1, 1), (0, 0))
    geos = _geometries(net, n_links)
    hidden = set(chain.hidden_indices)
    identity = True  # P still holds the input's own unit vectors (only zero pads so far)
    for k in range(n_links):
        link, m, new = chain.links[k], chain.links[k].module, geos[k]
        out_hw = link.out_shape[1:]
        if isinstance(m, nn.Conv2d) and identity:
            P = _first_conv_patches(P, m, new, out_hw)
        elif isinstance(m, nn.Conv2d):
            P = _conv_patches(P, geo, new, m, out_hw)
        elif isinstance(m, nn.MaxPool2d):
            P = _pool_patches(P, geo, new, m, net.winners[k][rows], out_hw)
        elif isinstance(m, nn.ZeroPad2d):
            left, right, top, bottom = m.padding
            P = F.pad(P, (0, 0, 0, 0, 0, 0, left, right, top, bottom))
        elif isinstance(m, nn.ReLU):
            P = P * net.masks[k][rows][..., None, None, None].to(P.dtype)
        if k in hidden:
            norms[k][rows] = torch.linalg.vector_norm(P, dim=(-3, -2, -1)).square()
        geo = new
        identity = identity and isinstance(m, (nn.ZeroPad2d, nn.Identity, nn.Dropout))
    return P, geo


def _patch_blocks(P: torch.Tensor, geo: Geometry) -> dict[tuple[int, int], torch.Tensor]:
    """Gram blocks of one sample's patches: ``blocks[δ][y, x] = K((y, x), (y, x) + δ)``, [C, C].

    Only offsets δ whose patches overlap can be non-zero; one half-plane of them is stored
    (the other is the transpose). Positions whose partner falls outside hold zeros.
    """
    C, H, W, _, ry, rx = P.shape
    reach = [math.ceil(geo.size[j] / geo.stride[j]) for j in range(2)]
    units = P.permute(1, 2, 0, 3, 4, 5)  # [H, W, C, ci, ry, rx]
    blocks = {}
    for dy in range(min(reach[0], H)):
        for dx in range(-min(reach[1], W) + 1, min(reach[1], W)):
            if dy == 0 and dx < 0:
                continue
            oy, ox = dy * geo.stride[0], abs(dx) * geo.stride[1]
            here = units[: H - dy, max(0, -dx): W - max(0, dx)]
            there = units[dy:, max(0, dx): W + min(0, dx)]
            cols_here = slice(ox, rx) if dx >= 0 else slice(0, rx - ox)
            cols_there = slice(0, rx - ox) if dx >= 0 else slice(ox, rx)
            a = here[..., oy:, cols_here].flatten(3)
            b = there[..., : ry - oy, cols_there].flatten(3)
            block = P.new_zeros(H, W, C, C)
            block[: H - dy, max(0, -dx): W - max(0, dx)] = a @ b.transpose(-1, -2)
            blocks[dy, dx] = block
    return blocks


def _placed_gram(patches: torch.Tensor, geo: Geometry, index: torch.Tensor, in_shape) -> torch.Tensor:
    """Gram of the units ``index`` by placing their patches in the whole input: R Rᵀ."""
    C, H, W, ci, ry, rx = patches.shape
    _, hin, win = in_shape
    top, left = geo.offset
    canvas = patches.new_zeros(len(index), ci, max(top + hin, (H - 1) * geo.stride[0] + ry),
                               max(left + win, (W - 1) * geo.stride[1] + rx))
    c, y, x = index // (H * W), index // W % H, index % W
    for pos in torch.unique(y * W + x).tolist():
        here = (y * W + x == pos).nonzero().squeeze(1)
        py, px = divmod(pos, W)
        y0, x0 = py * geo.stride[0], px * geo.stride[1]  # canvas is shifted by the offset
        canvas[here, :, y0:y0 + ry, x0:x0 + rx] = patches[c[here], py, px]
    placed = canvas[:, :, top:top + hin, left:left + win].flatten(1)
    return placed @ placed.T


def _dense_gram(blocks, shape) -> torch.Tensor:
    """The full Gram matrix ``[N, N]`` (N = C*H*W, channel-major) assembled from its blocks."""
    C, H, W = shape
    gram = next(iter(blocks.values())).new_zeros(C, H, W, C, H, W)
    for (dy, dx), block in blocks.items():
        ys = torch.arange(max(0, -dy), H - max(0, dy), device=block.device)
        xs = torch.arange(max(0, -dx), W - max(0, dx), device=block.device)
        part = block[ys[:, None], xs[None, :]]  # [hs, ws, C, C']
        gram[:, ys[:, None], xs[None, :], :, ys[:, None] + dy, xs[None, :] + dx] = part
        if dy or dx:
            gram[:, ys[:, None] + dy, xs[None, :] + dx, :, ys[:, None], xs[None, :]] = part.transpose(-1, -2)
    return gram.reshape(C * H * W, C * H * W)


# ----- after the cut ---------------------------------------------------------------------
class _SampleView(SwitchedNetwork):
    """One sample's state, sharing the parent's recorded masks and winners."""

    def __init__(self, net: SwitchedNetwork, row: int) -> None:  # noqa: D107 (no forward pass)
        self.chain, self.batch = net.chain, 1
        self.masks = {k: v[row:row + 1] for k, v in net.masks.items()}
        self.winners = {k: v[row:row + 1] for k, v in net.winners.items()}
        self.activities = {k: v[row:row + 1] for k, v in net.activities.items()}


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


def divmod_tensor(value: torch.Tensor, divisor: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.div(value, divisor, rounding_mode="floor"), torch.remainder(value, divisor)


def _after_cut(net: SwitchedNetwork, cut: int, patches, geo, norms: dict, row: int, all_neurons: bool):
    """uᵀ H u for every later hidden neuron, u its row of the map from the cut's active units.

    The rows come from pushing the active units' unit vectors forward: the first affine layer's
    columns are read off its weights, later layers are applied to them as matrices.
    """
    chain = net.chain
    sample = _SampleView(net, row)
    cut_shape = chain.links[cut - 1].out_shape
    index = (patches.abs().amax((-3, -2, -1)).flatten() > 0).nonzero().squeeze(1)
    C, H, W, ci, ry, rx = patches.shape
    reach = [math.ceil(geo.size[j] / geo.stride[j]) for j in range(2)]
    blocks_cost = H * W * (2 * reach[0] - 1) * (2 * reach[1] - 1) * C * C * ci * ry * rx / 2
    if len(index) ** 2 * math.prod(chain.in_shape) < GEMM_ADVANTAGE * blocks_cost:
        gram = _placed_gram(patches, geo, index, chain.in_shape)
    else:
        gram = _dense_gram(_patch_blocks(patches, geo), cut_shape)[index][:, index]
    positions, shape, t = index, cut_shape, None  # unit vectors, kept as indices until an affine layer
    for i in range(cut, max(chain.hidden_indices) + 1):
        link = chain.links[i]
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
            t = _affine_columns(link, shape, positions)[None]
        else:
            if t is None:  # anything else: materialise the unit vectors and push them
                t = gram.new_zeros(1, len(positions), math.prod(shape))
                t[0, torch.arange(len(positions), device=t.device), positions] = 1.0
                t = t.view(1, len(positions), *shape)
            t = sample.push_link(i, t)
        if link.is_affine and i in net.chain.hidden_indices:
            u = t[0].flatten(1)  # [T, n_i]
            activity = sample.activity(i)[0].flatten()
            wanted = slice(None) if all_neurons else (activity <= 0).nonzero().squeeze(1)
            columns = u[:, wanted]
            norms[i][row].view(-1)[wanted] = ((gram @ columns) * columns).sum(0)


def squared_norms(
    net: SwitchedNetwork, max_memory: int, cut: int | None = None, all_neurons: bool = False
) -> dict[int, torch.Tensor]:
    """‖ŵ_i‖² of the hidden neurons, ``{link index: [B, *out_shape]}``.

    Exact for every inactive neuron (v ≤ 0), which is all Insens needs; active neurons past
    the cut are left at zero unless ``all_neurons``.
    """
    chain = net.chain
    B = net.batch
    device = next(iter(net.activities.values())).device
    norms = {i: torch.zeros(B, *chain.links[i].out_shape, device=device) for i in chain.hidden_indices}
    cut = plan_cut(net, max_memory) if cut is None else cut
    if cut not in valid_cuts(net):
        raise ValueError(f"cannot cut at {cut}; valid cuts: {valid_cuts(net)}")
    if cut == 0:
        _forward_from_input(net, max_memory, norms)
        return norms
    geo_last = _geometries(net, cut)[-1]
    patch_floats = chain.in_shape[0] * math.prod(geo_last.size) * max(
        math.prod(link.out_shape) for link in chain.links[:cut])
    per_chunk = max(1, max_memory // (4 * 3 * patch_floats))
    for start in range(0, B, per_chunk):
        rows = slice(start, min(B, start + per_chunk))
        P, geo = _patch_stage(net, cut, norms, rows)
        if cut > max(chain.hidden_indices):
            continue
        for j in range(rows.stop - rows.start):
            _after_cut(net, cut, P[j], geo, norms, start + j, all_neurons)
    return norms


def _forward_from_input(net: SwitchedNetwork, max_memory: int, norms: dict) -> None:
    """Plain forward mode: one-hot input tangents in chunks, squared responses summed."""
    chain = net.chain
    hidden = set(chain.hidden_indices)
    d = math.prod(chain.in_shape)
    device = next(iter(net.activities.values())).device
    widest = max(math.prod(link.in_shape) + math.prod(link.out_shape) for link in chain.links)
    chunk = max(1, max_memory // (4 * 2 * widest * net.batch))
    for start in range(0, d, chunk):
        T = min(chunk, d - start)
        t = torch.zeros(net.batch, T, d, device=device)
        t[:, torch.arange(T, device=device), torch.arange(start, start + T, device=device)] = 1.0
        t = t.view(net.batch, T, *chain.in_shape)
        for i in range(max(hidden) + 1):
            t = net.push_link(i, t)
            if i in hidden:
                norms[i] += t.pow(2).sum(1)
