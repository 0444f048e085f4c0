"""Every check of one attribution method on the sampled frames, and of a random map beside it.

One call of :func:`measure_method` measures one method's maps: noise on the least and most
relevant inputs, deletion and insertion curves, the two randomisation checks, saliency on
the game's objects and on the objects moved by interventions. A random map goes through the
same measurements, as the baseline each method must beat.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..attribution import attribute
from .metrics import (
    FRACTION,
    SIGMA,
    SUBSTRATES,
    deletion_insertion,
    noise_agreement,
    object_saliency,
    random_maps,
    summary,
)
from .play import Sample
from .randomisation import cascading_randomisation, randomisation_check

CHECKS = ("noise", "insertion", "randomisation", "cascading", "objects", "interventions")
"""``noise``: the greedy action under noise on the least/most relevant inputs; ``insertion``:
deletion and insertion curves on each substrate; ``randomisation``: the top two layers
re-initialised; ``cascading``: every layer, from the output down; ``objects``: map mass on
the game's objects and the pointing game; ``interventions``: does saliency on a moved object
predict how much the policy's output changes."""
RANDOM = "random"
"""The baseline: maps of uniform noise."""
RANDOMISED_FRAMES = 32
"""Frames for the randomisation checks, which attribute once per randomised network."""


def check_checks(checks: Sequence[str]) -> tuple[str, ...]:
    """The checks asked for, refused by name where one is unknown (or none is asked for)."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise ValueError(f"unknown check(s) {unknown or list(checks)}; choose from {', '.join(CHECKS)}")
    return tuple(checks)


def method_maps(network: nn.Module, x: torch.Tensor, method: str, batch: int = 16) -> torch.Tensor:
    """``method``'s maps of the greedy action on each frame (uniform noise for ``RANDOM``),
    attributed ``batch`` frames at a time."""
    if method == RANDOM:
        return random_maps(tuple(x.shape))
    target = network(x).argmax(1)
    return torch.cat([attribute(network, part, method, target=t)
                      for part, t in zip(x.split(batch), target.split(batch), strict=True)])


def measure_method(network: nn.Module, x: torch.Tensor | Sample, method: str, batch: int = 16,
                   fraction: float = FRACTION, sigma: float = SIGMA, checks: Sequence[str] = CHECKS) -> dict:
    """The ``checks`` of one method (or of ``RANDOM`` maps) on the sampled frames.

    Args:
        network: the policy's score network.
        x: the sampled frames, as the network takes them, or a :class:`Sample` with the game's
            objects and interventions too.
        method: an attribution method, or ``RANDOM``.
        batch: frames attributed at a time.
        fraction: the share of inputs that get noise in the ``noise`` check.
        sigma: that noise's standard deviation.
        checks: which of ``CHECKS`` to run; those a method or a sample cannot take are skipped.

    Returns:
        Each check's result, by name (``noise_agreement``, ``curves``, ``objects``, ...).
    """
    sample = x if isinstance(x, Sample) else Sample(x, game="")
    x = sample.x
    maps = method_maps(network, x, method, batch)
    few = min(len(x), RANDOMISED_FRAMES)
    result: dict = {}
    if "noise" in checks and method != RANDOM:
        result["noise_agreement"] = noise_agreement(network, x, maps, fraction, sigma)
    if "insertion" in checks:
        result["curves"] = {base: deletion_insertion(network, x, maps, base=base) for base in SUBSTRATES}
    if "randomisation" in checks and method != RANDOM:
        result["randomisation_spearman"] = randomisation_check(network, x[:few], method, maps[:few])
    if "cascading" in checks and method != RANDOM:
        result["cascading"] = cascading_randomisation(network, x[:few], method, maps[:few])
    newest = maps[:, -1].cpu().numpy()
    if "objects" in checks and sample.has_objects:
        result["objects"] = objects_report(newest, sample.object_masks)
    if "interventions" in checks and sample.interventions:
        result["interventions"] = interventions_report(newest, sample)
    return result


def objects_report(newest: np.ndarray, object_masks: dict[str, np.ndarray]) -> dict:
    """Per object and for all together: mass on it (with 95% interval), its area, pointing rate."""
    report = {}
    together = np.any(np.stack(list(object_masks.values())), axis=0)
    for name, masks in {**object_masks, "all objects": together}.items():
        s = object_saliency(newest, masks)
        report[name] = {"mass": summary(s["mass"]), "area": float(s["area"].mean()),
                        "pointing": float(s["pointing"].mean())}
    return report


def interventions_report(newest: np.ndarray, sample: Sample) -> dict:
    """Rank correlation, over every kept intervention, between the map's mass on the moved
    object (at the frame it was moved from) and the change it caused in the policy's logits."""
    saliency = [float(object_saliency(newest[i["frame"]][None],
                                      sample.object_masks[i["object"]][i["frame"]][None])["mass"][0])
                for i in sample.interventions]
    change = [i["logit_change"] for i in sample.interventions]
    rho = stats.spearmanr(saliency, change).statistic if len(set(saliency)) > 1 else float("nan")
    return {"spearman_saliency_vs_logit_change": float(rho), "interventions": len(change),
            "dropped": sample.dropped_interventions}
