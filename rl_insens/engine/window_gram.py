"""Norms and the cut's Gram matrix for a second conv layer, from the first conv layer's Gram.

A first conv layer's neurons have input-independent ŵ: their kernels, cut off at the image
border. A second conv neuron at position p reads the first layer's units in its window, so
its ŵ is ``Σ_j a_j ŵ_j`` over the window's *active* first-layer units j, with ``a_j`` its
weight, and every inner product between second-layer ŵ is ``aᵀ G a'`` for the Gram ``G`` of
first-layer units. ``G`` depends only on the weights and on where the window sits against the
border (a handful of classes), so it is formed once per weight version; per input only the
active units' rows and columns of it are read and a few small products taken. No ŵ is ever
built in input space.

This covers the chain prefix ``[pads] conv ReLU [pads] conv ReLU``: the first two layers of
every Atari network (Nature CNN, RLNET). Other prefixes go through receptive-field patches.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .plan import as_pair
from .switched import SwitchedNetwork

PASSIVE = (nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class ConvPair:
    """Link indices of the prefix ``[pads] conv ReLU [pads] conv ReLU``; ``cut`` follows it."""

    first: int
    second: int

    @property
    def cut(self) -> int:
        return self.second + 2


def match_conv_pair(net: SwitchedNetwork) -> ConvPair | None:
    """The prefix this module handles, or None when the chain starts otherwise."""
    links = net.chain.links
    if len(net.chain.in_shape) != 3:
        return None
    k, convs = 0, []
    while len(convs) < 2:
        while k < len(links) and isinstance(links[k].module, (nn.ZeroPad2d, *PASSIVE)):
            k += 1
        if k + 1 >= len(links) or not isinstance(links[k + 1].module, nn.ReLU):
            return None
        conv = links[k].module
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or not isinstance(conv.padding, tuple):
            return None
        convs.append(k)
        k += 2
    if convs[1] not in net.chain.hidden_indices:
        return None
    return ConvPair(*convs)


@dataclass(frozen=True)
class _Windows:
    """Everything about the second layer's windows that the weights alone decide."""

    weight_t: torch.Tensor  # [n+1, n_out]: second-layer weights per window slot, a zero row last
    pad: tuple[int, int, int, int]  # (left, right, top, bottom) between the two layers' grids
    cls: torch.Tensor  # [P]: each output position's border class
    gram: torch.Tensor  # [K, n+1, n+1]: first-layer Gram over a window's slots, per class
    neighbours: list[_Neighbour]
    first_norms: torch.Tensor  # [1, C1, H1, W1]: the first layer's squared norms
    row_reach: int  # second-layer units this many rows apart or more have orthogonal ŵ


@dataclass(frozen=True)
class _Neighbour:
    """Windows ``p`` and ``p + offset``: which of their slots meet, and their Gram."""

    here: torch.Tensor  # [pairs]: positions p
    there: torch.Tensor  # [pairs]: positions p + offset
    combo: torch.Tensor  # [pairs]: index into gram
    slots_here: torch.Tensor  # [n_here]: slots of p that meet some slot of p + offset
    slots_there: torch.Tensor  # [n_there]
    weight_here: torch.Tensor  # [n_out+1, n_here+1]: weights of those slots, zero row and column last
    weight_there: torch.Tensor
    gram: torch.Tensor  # [combos, n_here+1, n_there+1]


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per second conv module: (weight versions, dtype, device, shapes) -> _Windows."""


def windows_of(net: SwitchedNetwork, pair: ConvPair) -> _Windows:
    """The second layer's :class:`_Windows` for ``pair``, built once per second conv module and kept
    until the weights, dtype, device or input shape change."""
    links = net.chain.links
    first, second = links[pair.first].module, links[pair.second].module
    key = (first.weight._version, second.weight._version, id(first.weight), id(second.weight),
           net.dtype, net.device, net.chain.in_shape)
    cached = _cache.get(second)
    if cached is not None and cached[0] == key:
        return cached[1]
    windows = _build_windows(net, pair)
    _cache[second] = (key, windows)
    return windows


def _unit_kernels(net: SwitchedNetwork, pair: ConvPair) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """ŵ of every first-layer unit as its patch ``[H1, W1, C1, ci, ry, rx]`` (cut off outside the
    image), which kernel taps fall on the image ``[H1, W1, kh, kw]``, and the patch stride in
    input pixels."""
    links = net.chain.links
    conv = links[pair.first].module
    valid = torch.ones(1, 1, *net.chain.in_shape[1:], device=net.device, dtype=net.dtype)
    for link in links[: pair.first]:
        if isinstance(link.module, nn.ZeroPad2d):
            valid = F.pad(valid, link.module.padding)
    (ph, pw), (dh, dw), (kh, kw) = as_pair(conv.padding), as_pair(conv.dilation), as_pair(conv.kernel_size)
    (sh, sw) = as_pair(conv.stride)
    h1, w1 = links[pair.first].out_shape[1:]
    windows = F.unfold(F.pad(valid, (pw, pw, ph, ph)), (kh, kw), (dh, dw), 0, (sh, sw))
    windows = windows.view(kh, kw, h1, w1).permute(2, 3, 0, 1)  # [H1, W1, kh, kw]
    ry, rx = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    patches = conv.weight.new_zeros(h1, w1, conv.out_channels, conv.in_channels, ry, rx)
    patches[..., ::dh, ::dw] = conv.weight[None, None] * windows[:, :, None, None]
    return patches, windows, (sh, sw)


def _build_windows(net: SwitchedNetwork, pair: ConvPair) -> _Windows:
    links = net.chain.links
    conv = links[pair.second].module
    c1, h1, w1 = links[pair.first].out_shape
    _, h2, w2 = links[pair.second].out_shape
    (kh, kw), (sh, sw), (dh, dw) = as_pair(conv.kernel_size), as_pair(conv.stride), as_pair(conv.dilation)
    left, right, top, bottom = (sum(link.module.padding[j] for link in links[pair.first + 2: pair.second]
                                    if isinstance(link.module, nn.ZeroPad2d)) for j in range(4))
    pad = (left + as_pair(conv.padding)[1], right + as_pair(conv.padding)[1],
           top + as_pair(conv.padding)[0], bottom + as_pair(conv.padding)[0])
    kernels, inside, (s1y, s1x) = _unit_kernels(net, pair)
    inside_rows = [tuple(r) for r in inside.amax(dim=(1, 3)).tolist()]  # [H1][kh1]: tap on the image
    inside_cols = [tuple(c) for c in inside.amax(dim=(0, 2)).tolist()]
    ci, ry, rx = kernels.shape[3:]
    n = c1 * kh * kw  # slots in unfold's order: (channel, tap row, tap column)
    size = ((kh - 1) * dh * s1y + ry, (kw - 1) * dw * s1x + rx)  # a window's field in input pixels
    step = (sh * s1y, sw * s1x)  # input pixels between neighbouring windows

    def row_of(py: int, a: int) -> int:
        return py * sh + a * dh - pad[2]

    def col_of(px: int, b: int) -> int:
        return px * sw + b * dw - pad[0]

    def signature(positions: list[int], inside: list[tuple]) -> tuple:
        """What a window's Gram depends on along one axis: which of its taps fall on the
        first layer's grid, and where each such unit's kernel is cut off by the border."""
        return tuple(inside[q] if 0 <= q < len(inside) else None for q in positions)

    row_keys = [signature([row_of(py, a) for a in range(kh)], inside_rows) for py in range(h2)]
    col_keys = [signature([col_of(px, b) for b in range(kw)], inside_cols) for px in range(w2)]
    classes: dict[tuple, int] = {}
    representative: list[tuple[int, int]] = []
    cls = []
    for py in range(h2):
        for px in range(w2):
            k = classes.setdefault((row_keys[py], col_keys[px]), len(classes))
            if k == len(representative):
                representative.append((py, px))
            cls.append(k)

    def field(py: int, px: int) -> torch.Tensor:
        """The window's slots as vectors on its field ``[n, ci, size_y, size_x]``."""
        out = kernels.new_zeros(c1, kh, kw, ci, *size)
        for a in range(kh):
            for b in range(kw):
                qy, qx = row_of(py, a), col_of(px, b)
                if 0 <= qy < h1 and 0 <= qx < w1:
                    y, x = a * dh * s1y, b * dw * s1x
                    out[:, a, b, :, y: y + ry, x: x + rx] = kernels[qy, qx]
        return out.view(n, ci, *size)

    fields = [field(*p) for p in representative]
    gram = torch.stack([F.pad(f.flatten(1) @ f.flatten(1).T, (0, 1, 0, 1)) for f in fields])
    weight = F.pad(conv.weight.reshape(conv.out_channels, n), (0, 1))
    cls_t = torch.tensor(cls, device=net.device)

    neighbours = []
    reach = [math.ceil(size[j] / step[j]) for j in range(2)]
    for dy in range(reach[0]):
        for dx in range(-reach[1] + 1, reach[1]):
            if dy == 0 and dx <= 0:
                continue
            oy, ox = dy * step[0], abs(dx) * step[1]
            rows_here, rows_there = slice(oy, size[0]), slice(0, size[0] - oy)
            cols_here, cols_there = (slice(ox, size[1]), slice(0, size[1] - ox)) if dx >= 0 else \
                (slice(0, size[1] - ox), slice(ox, size[1]))
            here, there, combos = [], [], {}
            for py in range(h2 - dy):
                for px in range(max(0, -dx), w2 - max(0, dx)):
                    p, q = py * w2 + px, (py + dy) * w2 + px + dx
                    here.append(p)
                    there.append(q)
                    combos.setdefault((cls[p], cls[q]), len(combos))
            if not here:
                continue
            blocks = torch.stack([fields[a][:, :, rows_here, cols_here].flatten(1)
                                  @ fields[b][:, :, rows_there, cols_there].flatten(1).T
                                  for a, b in combos])
            slots_here = (blocks != 0).any(0).any(1).nonzero().squeeze(1)
            slots_there = (blocks != 0).any(0).any(0).nonzero().squeeze(1)
            if not len(slots_here):
                continue
            blocks = blocks[:, slots_here][:, :, slots_there]
            combo = [combos[(cls[p], cls[q])] for p, q in zip(here, there, strict=True)]
            neighbours.append(_Neighbour(
                torch.tensor(here, device=net.device), torch.tensor(there, device=net.device),
                torch.tensor(combo, device=net.device), slots_here, slots_there,
                F.pad(weight[:, slots_here], (0, 1, 0, 1)), F.pad(weight[:, slots_there], (0, 1, 0, 1)),
                F.pad(blocks, (0, 1, 0, 1)),
            ))
    first_norms = kernels.square().sum((3, 4, 5)).permute(2, 0, 1)[None]
    row_reach = max([int(nb.there[0] // w2 - nb.here[0] // w2) for nb in neighbours], default=0) + 1
    return _Windows(F.pad(weight[:, :-1].T, (0, 0, 0, 1)), pad, cls_t, gram, neighbours, first_norms,
                    row_reach)


def _lists(mask: torch.Tensor, pad_value: int) -> torch.Tensor:
    """Per row of a boolean ``[..., n]``, the indices of its True entries first, then
    ``pad_value`` up to the most any row holds: ``[..., m]``."""
    counts = mask.sum(-1)
    m = max(int(counts.max()), 1) if mask.numel() else 1
    order = torch.sort(mask.to(torch.uint8), dim=-1, descending=True, stable=True).indices[..., :m]
    return torch.where(torch.arange(m, device=mask.device) < counts[..., None], order, pad_value)


def _take2(matrix: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
           which: torch.Tensor | None = None) -> torch.Tensor:
    """``matrix[which_g, rows_gi, cols_gj]`` for index lists ``rows [G, r]``, ``cols [G, c]``:
    ``[G, r, c]``; ``matrix`` is ``[R, C]`` or, with ``which [G]``, ``[K, R, C]``. One gather,
    no copy of the matrices."""
    R, C = matrix.shape[-2:]
    small = torch.int32 if matrix.numel() < 2**31 else torch.int64  # int32: index_select's fast path
    rows, cols = rows.to(small), cols.to(small)
    offset = rows * C if which is None else rows * C + (which.to(small) * (R * C))[:, None]
    flat = (offset[:, :, None] + cols[:, None, :]).flatten()
    return matrix.reshape(-1).index_select(0, flat).view(len(rows), rows.shape[1], cols.shape[1])


def _put(gram: torch.Tensor, sample: torch.Tensor, i: torch.Tensor, j: torch.Tensor, values: torch.Tensor
         ) -> None:
    """``gram[sample, i, j] = values`` (indices broadcast to ``values``' shape) as one scatter into
    the flat tensor: 3x faster than indexing by three tensors. The caller makes sure that only
    padding entries are written twice, as zeros or before they are zeroed."""
    _, rows, cols = gram.shape
    flat = (sample * (rows * cols) + i * cols + j).expand(values.shape)
    gram.view(-1).scatter_(0, flat.reshape(-1), values.reshape(-1))


@torch.no_grad()
def conv_pair_norms_and_gram(net: SwitchedNetwork, pair: ConvPair, number: torch.Tensor, n_max: int
                             ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Both layers' squared norms ``{link: [B, *shape]}`` and the Gram ``[B, n_max+1, n_max+1]``
    of the active second-layer units' ŵ, numbered by ``number`` (``[B, n_out, H2, W2]``, ``n_max``
    where inactive), with a zero last row and column."""
    links = net.chain.links
    w = windows_of(net, pair)
    conv = links[pair.second].module
    (kh, kw), (sh, sw), (dh, dw) = as_pair(conv.kernel_size), as_pair(conv.stride), as_pair(conv.dilation)
    masks = net.masks[pair.first + 1].to(net.dtype)  # [B, C1, H1, W1]
    B = masks.shape[0]
    n_out, (_, h2, w2) = conv.out_channels, links[pair.second].out_shape
    P, n = h2 * w2, w.weight_t.shape[0] - 1
    window = F.unfold(F.pad(masks, w.pad), (kh, kw), (dh, dw), 0, (sh, sw))  # [B, n, P]
    window = window.transpose(1, 2) > 0  # [B, P, n]

    # Each window's own Gram: the second layer's norms, and the Gram within a position.
    act = _lists(window, n).flatten(0, 1)  # [B*P, S]
    a_t = w.weight_t.index_select(0, act.flatten()).view(*act.shape, n_out)  # [B*P, S, n_out]: aᵀ
    local = _take2(w.gram, act, act, w.cls.repeat(B))  # [B*P, S, S]
    m_t = torch.bmm(local, a_t)  # (a G)ᵀ: G is symmetric
    found = {pair.first: w.first_norms.expand(B, *w.first_norms.shape[1:]),
             pair.second: (m_t * a_t).sum(1).view(B, h2, w2, n_out).permute(0, 3, 1, 2)}

    active = net.masks[pair.second + 1].flatten(2).transpose(1, 2)  # [B, P, n_out]
    outs = _lists(active, n_out).flatten(0, 1)  # [B*P, S2]
    ids = F.pad(number.flatten(2).transpose(1, 2), (0, 1), value=n_max).flatten(0, 1)  # [B*P, n_out+1]
    ids = ids.gather(1, outs)
    gram = net.output.new_zeros(B, n_max + 1, n_max + 1)
    sample = torch.arange(B, device=net.device).repeat_interleave(P)[:, None, None]
    pick = outs[:, None, :].expand(-1, m_t.shape[1], -1)
    m_t, a_t = F.pad(m_t, (0, 1)).gather(2, pick), F.pad(a_t, (0, 1)).gather(2, pick)
    _put(gram, sample, ids[:, :, None], ids[:, None, :], m_t.transpose(1, 2) @ a_t)

    # Neighbouring windows: only the slots that meet across the border are read.
    samples = torch.arange(B, device=net.device)[:, None]
    for nb in w.neighbours:
        pairs = len(nb.here)
        here = _lists(window[:, nb.here][..., nb.slots_here], len(nb.slots_here)).flatten(0, 1)
        there = _lists(window[:, nb.there][..., nb.slots_there], len(nb.slots_there)).flatten(0, 1)
        outs_here = outs.view(B, P, -1)[:, nb.here].flatten(0, 1)
        outs_there = outs.view(B, P, -1)[:, nb.there].flatten(0, 1)
        block = _take2(nb.gram, here, there, nb.combo.repeat(B))
        left = _take2(nb.weight_here, outs_here, here)
        right = _take2(nb.weight_there, outs_there, there)
        block = left @ block @ right.transpose(1, 2)  # [B*pairs, S2, S2]
        i = ids.view(B, P, -1)[:, nb.here].flatten(0, 1)[:, :, None]
        j = ids.view(B, P, -1)[:, nb.there].flatten(0, 1)[:, None, :]
        s = samples.expand(B, pairs).reshape(-1, 1, 1)
        _put(gram, s, i, j, block)
        _put(gram, s, j.transpose(1, 2), i.transpose(1, 2), block.transpose(1, 2))
    gram[:, n_max] = 0
    gram[:, :, n_max] = 0
    return found, gram



@dataclass(frozen=True)
class ConvThenLinear:
    """Link indices of ``[pads] conv ReLU [flatten] linear`` right after the cut, the linear
    layer being the last hidden one (the end of every Atari network)."""

    cut: int
    conv: int
    linear: int


def match_conv_then_linear(net: SwitchedNetwork, cut: int) -> ConvThenLinear | None:
    """The layers ``[pads] conv ReLU [flatten] linear`` that :func:`conv_then_linear_forms` handles
    right after ``cut``, or None when the chain goes on otherwise."""
    links, hidden = net.chain.links, net.chain.hidden_indices
    k = cut
    while k < len(links) and isinstance(links[k].module, (nn.ZeroPad2d, *PASSIVE)):
        k += 1
    if k + 2 >= len(links) or k not in hidden or not isinstance(links[k + 1].module, nn.ReLU):
        return None
    conv = links[k].module
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or not isinstance(conv.padding, tuple):
        return None
    j = k + 2
    while j < len(links) and isinstance(links[j].module, (nn.Flatten, *PASSIVE)):
        j += 1
    if j >= len(links) or not isinstance(links[j].module, nn.Linear) or j != max(hidden):
        return None
    return ConvThenLinear(cut, k, j)


def _unit_windows(mask: torch.Tensor, number: torch.Tensor, n_max: int, pad, conv: nn.Conv2d):
    """For each output position of ``conv`` over the cut: its active input units as slot lists
    ``[B*P, S]`` (slot ``n`` = none) and their numbers ``[B*P, S]`` (``n_max`` = none)."""
    (kh, kw), (sh, sw), (dh, dw) = as_pair(conv.kernel_size), as_pair(conv.stride), as_pair(conv.dilation)
    window = F.unfold(F.pad(mask.to(torch.float32), pad), (kh, kw), (dh, dw), 0, (sh, sw))
    n = window.shape[1]
    slots = _lists(window.transpose(1, 2) > 0, n).flatten(0, 1)
    numbers = F.unfold(F.pad(number.to(torch.float32) + 1, pad), (kh, kw), (dh, dw), 0, (sh, sw)) - 1
    numbers = F.pad(numbers.transpose(1, 2).flatten(0, 1), (0, 1), value=-1).long()
    ids = numbers.gather(1, slots)
    return slots, torch.where(ids < 0, n_max, ids)


@torch.no_grad()
def conv_then_linear_forms(net: SwitchedNetwork, layers: ConvThenLinear, gram: torch.Tensor,
                           number: torch.Tensor, reach: int, all_neurons: bool) -> dict[int, torch.Tensor]:
    """‖ŵ‖² of the conv and linear layers after the cut: ``uᵀ H u`` with ``H`` the cut's Gram
    (``gram [B, n+1, n+1]``, a zero last row and column) and ``u`` a neuron's row of the map
    from the cut's active units (numbered by ``number [B, C, H, W]`` position by position, so
    that units ``reach`` or more rows apart, whose ŵ are orthogonal, are far apart in ``gram``).

    A conv neuron reads only the units in its window, so its forms are taken per window
    over the few rows of ``H`` those units hold. The linear layer reads the conv layer's
    active neurons; its rows ``u`` are the conv layer's sparse Jacobian, written per window
    straight from the weights, times the linear weights.
    """
    links, cut = net.chain.links, layers.cut
    conv, linear = links[layers.conv].module, links[layers.linear].module
    B, n1 = gram.shape[0], gram.shape[1]
    n_out, h3, w3 = links[layers.conv].out_shape
    P = h3 * w3
    left, right, top, bottom = (sum(link.module.padding[j] for link in links[cut: layers.conv]
                                    if isinstance(link.module, nn.ZeroPad2d)) for j in range(4))
    (ph, pw) = as_pair(conv.padding)
    pad = (left + pw, right + pw, top + ph, bottom + ph)
    slots, ids = _unit_windows(net.masks[cut - 1], number, n1 - 1, pad, conv)
    weight = F.pad(conv.weight.reshape(n_out, -1), (0, 1, 0, 1))  # [n_out+1, n+1]: zero row, column last
    a_t = weight[:n_out].T.contiguous().index_select(0, slots.flatten())
    a_t = a_t.view(*slots.shape, n_out)  # [B*P, S, n_out]: aᵀ
    sample = torch.arange(B, device=gram.device).repeat_interleave(P)
    local = _take2(gram, ids, ids, sample)
    forms = (torch.bmm(local, a_t) * a_t).sum(1).view(B, h3, w3, n_out).permute(0, 3, 1, 2)
    activity = net.activity(layers.conv)
    found = {layers.conv: forms if all_neurons else torch.where(activity <= 0, forms, 0.0)}

    # The linear layer: its rows u = Wᵀ restricted to the conv layer's active neurons, times
    # their Jacobian J [units, active conv neurons], scattered from the windows' weights.
    on = net.masks[layers.conv + 1].flatten(2).transpose(1, 2)  # [B, P, n_out]
    outs = _lists(on, n_out).flatten(0, 1)  # [B*P, S3]
    count = on.flatten(1).sum(1)
    n3 = max(int(count.max()), 1)
    column = torch.full((B * P, outs.shape[1]), n3, device=gram.device)
    real = outs < n_out
    column[real] = (torch.cumsum(real.view(B, -1), 1) - 1).view_as(real)[real]  # per sample, in order
    jac = gram.new_zeros(B, n1, n3 + 1)
    values = _take2(weight, outs, slots)  # [B*P, S3, S]
    s = sample[:, None, None]
    _put(jac, s, ids[:, None, :], column[:, :, None], values)  # padding writes only zeros
    activity = net.activity(layers.linear)
    wanted = torch.ones_like(activity, dtype=torch.bool) if all_neurons else activity <= 0
    outputs = wanted.any(0).nonzero().squeeze(1)
    flat = outs * P + torch.arange(P, device=gram.device).repeat(B)[:, None]  # index into the flatten
    inputs = torch.zeros((B, n3 + 1), dtype=torch.long, device=gram.device)
    inputs[sample[:, None].expand_as(column), column] = torch.where(real, flat, 0)
    w = linear.weight.index_select(1, inputs.flatten()).index_select(0, outputs)  # [outputs, B*(n3+1)]
    w = w.view(-1, B, n3 + 1).permute(1, 2, 0)  # [B, n3+1, outputs]; column n3 is read by no unit
    rows_u = torch.bmm(jac, w)  # [B, n1, outputs]
    forms = (_banded_product(gram, rows_u, net.masks[cut - 1], reach) * rows_u).sum(1)
    result = forms.new_zeros(B, linear.out_features).index_copy_(1, outputs, forms)
    found[layers.linear] = torch.where(wanted, result, 0.0)
    return found


def _most_in_a_window(mask: torch.Tensor, pad, conv: nn.Conv2d) -> int:
    """The most active units any window of ``conv`` over ``mask [B, C, H, W]`` holds."""
    (kh, kw), (sh, sw), (dh, dw) = as_pair(conv.kernel_size), as_pair(conv.stride), as_pair(conv.dilation)
    counts = F.unfold(F.pad(mask.to(torch.float32), pad), (kh, kw), (dh, dw), 0, (sh, sw)).sum(1)
    return int(counts.max()) + 1


def window_floats(net: SwitchedNetwork, pair: ConvPair, layers: ConvThenLinear | None) -> int:
    """Peak working floats of one sample on this path, from the batch's own masks: the
    per-window Grams and products of the second layer, the cut's Gram, and after the cut
    either the conv layer's windows and the linear layer's rows or the generic column push."""
    links = net.chain.links
    w = windows_of(net, pair)
    conv = links[pair.second].module
    n_out, h2, w2 = links[pair.second].out_shape
    s = _most_in_a_window(net.masks[pair.first + 1], w.pad, conv)
    first = h2 * w2 * (s * s + 3 * n_out * s)
    n = int(net.masks[pair.cut - 1].flatten(1).sum(1).max()) + 1
    cut_gram = n * n
    if layers is None:
        widest = max(math.prod(link.out_shape) for link in links[pair.cut:])
        return cut_gram + max(first, 3 * n * widest)
    conv3, linear = links[layers.conv].module, links[layers.linear].module
    O3, h3, w3 = links[layers.conv].out_shape
    left, right, top, bottom = (sum(link.module.padding[j] for link in links[pair.cut: layers.conv]
                                    if isinstance(link.module, nn.ZeroPad2d)) for j in range(4))
    ph, pw = as_pair(conv3.padding)
    s3 = _most_in_a_window(net.masks[pair.cut - 1], (left + pw, right + pw, top + ph, bottom + ph), conv3)
    n3 = int(net.masks[layers.conv + 1].flatten(1).sum(1).max()) + 1
    second = h3 * w3 * (s3 * s3 + 3 * O3 * s3) + n * n3 + n3 * linear.out_features \
        + 3 * n * linear.out_features
    return cut_gram + max(first, second)


def _banded_product(gram: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, reach: int) -> torch.Tensor:
    """``gram @ t`` for a Gram that is zero between units ``reach`` or more rows apart, the
    units numbered position by position (``mask [B, C, H, W]`` says which are active): each
    row of positions is multiplied with its band alone."""
    B, _, H, _ = mask.shape
    if reach >= H:
        return torch.bmm(gram, t)
    starts = F.pad(mask.sum((1, 3)).cumsum(1), (1, 0)).tolist()  # [B][H+1]: first unit of each row
    out = torch.zeros_like(t)
    for b in range(B):
        for y in range(H):
            lo, hi = starts[b][y], starts[b][y + 1]
            if lo < hi:
                first, last = starts[b][max(0, y - reach + 1)], starts[b][min(H, y + reach)]
                out[b, lo:hi] = gram[b, lo:hi, first:last] @ t[b, first:last]
    return out
