"""Exact squared norms ‖ŵ_i‖² of every hidden neuron: the whole cost of Insens.

Every later neuron's ŵ is read as a combination of the ŵ of the active units at a *cut* (a
ReLU or max-pool output chosen by estimated cost, :mod:`.plan`), so ``‖ŵ‖² = uᵀ H u`` with H
those units' Gram. How H and the norms before the cut are found:

* the first two convs through the first layer's input-independent Gram (:mod:`.window_gram`),
  for chains that start ``conv ReLU conv ReLU``: every Atari network;
* receptive-field patches (:mod:`.patches`) otherwise.

After the cut, the conv and linear layers of an Atari network are read window by window
(:mod:`.window_gram`), any other chain by pushing columns (:mod:`.after_cut`). Cutting at the
input (no patches, H = identity) is plain forward mode, which wins for small inputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .after_cut import _after_cut
from .cut import _CutUnits, _input_space_pays, _InputSpace
from .patches import _active_gram, _patch_stage
from .plan import _geometries, as_pair, plan_cut, valid_cuts
from .switched import SwitchedNetwork
from .window_gram import (
    conv_pair_norms_and_gram,
    conv_then_linear_forms,
    match_conv_pair,
    match_conv_then_linear,
    window_floats,
    windows_of,
)


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
    cut = plan_cut(net, max_memory) if cut is None else cut
    if cut not in valid_cuts(net):
        raise ValueError(f"cannot cut at {cut}; valid cuts: {valid_cuts(net)}")
    if cut == 0:
        return _forward_from_input(net, max_memory)
    fits = max(1, max_memory // _bytes_per_sample(net, cut))
    per_chunk = math.ceil(B / math.ceil(B / fits))  # equal chunks: 16 as 8 + 8, not 13 + 3
    chunks = [_chunk_norms(net.rows(slice(start, start + per_chunk)), cut, all_neurons)
              for start in range(0, B, per_chunk)]
    return {i: torch.cat([chunk[i] for chunk in chunks]).view(B, *chain.links[i].out_shape)
            for i in chain.hidden_indices}


def _chunk_norms(net: SwitchedNetwork, cut: int, all_neurons: bool) -> dict[int, torch.Tensor]:
    """The norms of a batch small enough to go at once: windows over the first layer's Gram
    where the chain starts with two convs and the cut follows them, receptive-field patches
    otherwise."""
    pair = match_conv_pair(net)
    if pair is not None and cut == pair.cut:
        mask = net.masks[cut - 1]
        units = _CutUnits.of(mask, position_major=True)
        number = torch.full(mask.shape, units.n_max, device=net.device)
        number[units.b, units.c, units.y, units.x] = units.number
        found, gram = conv_pair_norms_and_gram(net, pair, number, units.n_max)
        layers = match_conv_then_linear(net, cut)
        if layers is not None:
            reach = windows_of(net, pair).row_reach
            return found | conv_then_linear_forms(net, layers, gram, number, reach, all_neurons)
        gram = gram[:, :-1, :-1]
    else:
        P, geo, active, found = _patch_stage(net, cut)
        if cut > max(net.chain.hidden_indices):
            return found
        if active is None:  # units whose ŵ is not zero (one with ŵ = 0 would only add a zero row)
            active = P.square().sum((3, 4, 5)) > 0
        units = _CutUnits.of(active.permute(0, 3, 1, 2))  # [B, C, H, W]
        gram = _InputSpace.of(P, geo, units, net.chain.in_shape) if _input_space_pays(net, cut, units) \
            else _active_gram(P, geo, units)
    return found | _after_cut(net, cut, gram, units, all_neurons)


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
            field = min(c * h * w, link.module.in_channels * math.prod(as_pair(link.module.kernel_size)))
            local = max(local, math.prod(link.out_shape[1:]) * (field * n // (c * h * w) + 1) ** 2)
    gram_floats = 4 * patches[-1] + n * n + 3 * n * widest + 2 * local
    return net.output.element_size() * max(patch_floats, gram_floats)


def _forward_from_input(net: SwitchedNetwork, max_memory: int) -> dict[int, torch.Tensor]:
    """Plain forward mode: one-hot input tangents in chunks, squared responses summed."""
    chain = net.chain
    norms = {i: net.output.new_zeros(net.batch, *chain.links[i].out_shape) for i in chain.hidden_indices}
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
    return norms
