"""Where to cut the chain: each layer's receptive-field geometry and each cut's estimated cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .switched import SwitchedNetwork

ASSUMED_ACTIVE_FRACTION = 0.35
"""Fraction of cut units taken as active when planning (the paper saw 17-32%)."""


@dataclass(frozen=True)
class Geometry:
    """Where each unit's patch sits: unit (y, x) covers input rows from y*stride - offset."""

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]


def as_pair(v) -> tuple[int, int]:
    """A layer's int-or-pair setting (kernel size, stride, ...) as a pair."""
    return (v, v) if isinstance(v, int) else tuple(v)


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
            k, s = as_pair(m.kernel_size), as_pair(m.stride)
            p, d = as_pair(m.padding), as_pair(m.dilation)
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
        return math.prod(link.out_shape) * (m.in_channels // m.groups) * math.prod(as_pair(m.kernel_size))
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
