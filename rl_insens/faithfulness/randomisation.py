"""Model randomisation checks (Adebayo et al., NeurIPS 2018): does a map change when the
weights it should depend on are replaced by random ones?

Cascading: the conv/linear layers are re-initialised from the output down, one more at each
step, each with its own initialiser (PyTorch's default for its type) and its own seed, and
the maps of each randomised network are compared with the trained network's maps.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..attribution import attribute
from .metrics import similarity, spearman


def affine_layers(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers of ``network`` with their names, input end first: the layers that
    randomisation re-initialises, from the last."""
    return [(name, m) for name, m in network.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def randomised_copy(network: nn.Module, layers: int = 2, seed: int = 0) -> nn.Module:
    """A copy with its top ``layers`` conv/linear layers re-initialised. The global random state
    is left as it was: the layers draw from a fork of it, seeded by ``seed`` and their depth."""
    model = copy.deepcopy(network)
    affine = affine_layers(model)
    for depth, (_, module) in enumerate(reversed(affine[len(affine) - layers:])):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + depth)
            module.reset_parameters()
    return model


def randomisation_check(network: nn.Module, x: torch.Tensor, method: str, maps: torch.Tensor,
                        layers: int = 2) -> float:
    """Mean rank correlation of |maps| between the trained and the randomised network."""
    random_maps = attribute(randomised_copy(network, layers), x, method, target=network(x).argmax(1))
    return float(spearman(maps.abs(), random_maps.abs()).mean())


def cascading_randomisation(network: nn.Module, x: torch.Tensor, method: str, maps: torch.Tensor,
                            seed: int = 0) -> dict:
    """Per step (top 1, 2, ... layers randomised): each similarity's mean and spread over frames.

    Maps of the randomised networks are for the action the trained network chose."""
    target = network(x).argmax(1)
    names = [name for name, _ in affine_layers(network)]
    reference = maps.cpu().numpy()
    steps = []
    for k in range(1, len(names) + 1):
        random = attribute(randomised_copy(network, k, seed), x, method, target=target).cpu().numpy()
        per_frame = [similarity(a, b) for a, b in zip(reference, random, strict=True)]
        steps.append({"randomised": names[::-1][:k][-1],
                      **{m: {"mean": float(np.mean([f[m] for f in per_frame])),
                             "std": float(np.std([f[m] for f in per_frame]))} for m in per_frame[0]}})
    return {"layers": names[::-1], "steps": steps}
