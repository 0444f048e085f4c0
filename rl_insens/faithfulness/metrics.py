"""What a map says about the network, measured on frames: each metric a function of tensors.

* Noise where the map says it does not matter: Gaussian noise on the k% of inputs with the
  lowest |attribution|, versus the highest k% and a random k%; does the greedy action survive?
  (The game version of the paper's outline/frame test, section 4.1.)
* Deletion and insertion (RISE's causal metric): inputs removed from the frame, or inserted
  into a substrate, most relevant first; the chosen action's probability and logit along the
  way, and the area under each curve per frame. The substrate changes how methods rank, so
  there are two: black (all zeros) and the frame blurred.
* Similarity of two maps (for the randomisation checks): Spearman rank correlation, SSIM and
  the Pearson correlation of HOG features, each the larger of the comparison with the map and
  with the map inverted, since a map's sign may flip without its meaning changing.
* Object saliency: the share of a map's mass on the game's objects, and whether its maximum
  falls on one (the pointing game).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn

from ..intervals import confidence_interval

FRACTION = 0.5
"""Default share of inputs that get noise."""
SIGMA = 0.3
"""Default standard deviation of that noise, for inputs in [0, 1]."""
SUBSTRATES = ("black", "blurred")
"""What deletion and insertion go to and from: all zeros, or the frame blurred."""
BLUR_SIGMA = 5.0
"""Pixels: the blurred substrate keeps coarse shapes and loses the objects' edges."""


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair, each row flattened (ties take their mean rank).

    A row with no spread has no ranking to correlate: its correlation is ``nan``."""
    a, b = (t.detach().flatten(1).double().cpu().numpy() for t in (a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return torch.tensor([stats.spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)])


def summary(values) -> dict:
    """Mean, 95% interval and spread of per-frame values."""
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "ci95": confidence_interval(values), "std": float(values.std())}


@torch.no_grad()
def noise_agreement(network: nn.Module, x: torch.Tensor, maps: torch.Tensor, fraction: float = FRACTION,
                    sigma: float = SIGMA, seed: int = 0, low: float = 0.0, high: float = 1.0) -> dict:
    """Share of frames whose greedy action survives noise on the least / most / randomly chosen
    ``fraction`` of inputs, ranked by |attribution|.

    Args:
        network: the policy's score network.
        x: the frames, as the network takes them.
        maps: one attribution map per frame, the frames' shape.
        fraction: the share of inputs that get noise.
        sigma: the noise's standard deviation.
        seed: the seed of the noise and of the random choice.
        low: the smallest valid input, where noisy inputs are clipped.
        high: the largest.

    Returns:
        ``{"lowest": ..., "highest": ..., "random": ...}``: the share of frames whose greedy
        action is unchanged, per choice of inputs.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    flat = x.flatten(1)
    k = int(round(fraction * flat.shape[1]))
    order = maps.flatten(1).abs().argsort(1)  # ascending |attribution|
    random_order = torch.rand(flat.shape, generator=generator).argsort(1).to(x.device)
    noise = torch.randn(flat.shape, generator=generator).to(x.device) * sigma
    clean = network(x).argmax(1)
    result = {}
    choices = {"lowest": order[:, :k], "highest": order[:, -k:], "random": random_order[:, :k]}
    for name, chosen in choices.items():
        noisy = with_noise(flat, chosen, noise, low, high).view_as(x)
        result[name] = float((network(noisy).argmax(1) == clean).float().mean())
    return result


def with_noise(flat: torch.Tensor, chosen: torch.Tensor, noise: torch.Tensor, low: float = 0.0,
               high: float = 1.0) -> torch.Tensor:
    """``flat`` (frames x inputs) with ``noise`` added at the ``chosen`` inputs of each row, clipped
    to the valid range so the frames stay frames the agent could see.

    Args:
        flat: the frames, one row each.
        chosen: per row, the indices of the inputs that get noise.
        noise: the noise, ``flat``'s shape.
        low: the smallest valid input.
        high: the largest.

    Returns:
        A new tensor; ``flat`` is left as it was.
    """
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, chosen, True)
    return torch.where(mask, (flat + noise).clamp(low, high), flat)


def substrate(x: torch.Tensor, kind: str) -> torch.Tensor:
    """What inputs are deleted to, or inserted into: zeros, or each frame blurred."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "blurred":
        sigma = [0] * (x.dim() - 2) + [BLUR_SIGMA, BLUR_SIGMA]
        return torch.as_tensor(ndimage.gaussian_filter(x.cpu().numpy(), sigma), device=x.device)
    raise ValueError(f"unknown substrate {kind!r}; choose from {', '.join(SUBSTRATES)}")


@torch.no_grad()
def deletion_insertion(network: nn.Module, x: torch.Tensor, maps: torch.Tensor, steps: int = 20,
                       base: str = "black", batch: int = 64) -> dict:
    """Curves of the chosen action's probability and logit as inputs are deleted (set to the
    substrate ``base``) or inserted (into it), most relevant first; the area under each curve
    per frame, summarised over frames with a 95% interval.

    Args:
        network: the policy's score network.
        x: the frames, as the network takes them.
        maps: one attribution map per frame, the frames' shape.
        steps: points along each curve, past the first (0% of inputs deleted or inserted).
        base: the substrate, one of ``SUBSTRATES``.
        batch: frames per forward pass.

    Returns:
        The fractions, the mean curves (``deletion_prob``, ``insertion_logit``, ...) and each
        curve's mean area (``auc_*``) with its 95% interval (``auc_*_ci95``).
    """
    flat, background = x.flatten(1), substrate(x, base).flatten(1)
    n, d = flat.shape
    order = maps.flatten(1).abs().argsort(1, descending=True)
    target = network(x).argmax(1)
    fractions = np.linspace(0, 1, steps + 1)
    curves = {f"{kind}_{what}": np.zeros((steps + 1, n)) for kind in ("deletion", "insertion")
              for what in ("prob", "logit")}
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=x.device).expand(n, d))
    for s, fraction in enumerate(fractions):
        top = rank < int(round(fraction * d))  # the most relevant ``fraction`` of inputs
        for kind, frames in (("deletion", torch.where(top, background, flat)),
                             ("insertion", torch.where(top, flat, background))):
            logits = torch.cat([network(part.view(-1, *x.shape[1:])) for part in frames.split(batch)])
            curves[f"{kind}_prob"][s] = logits.softmax(1).gather(1, target[:, None])[:, 0].cpu().numpy()
            curves[f"{kind}_logit"][s] = logits.gather(1, target[:, None])[:, 0].cpu().numpy()
    per_frame = {k: np.trapezoid(v, fractions, axis=0) for k, v in curves.items()}
    return {"substrate": base, "fractions": fractions.tolist(),
            **{k: v.mean(1).tolist() for k, v in curves.items()},
            **{f"auc_{k}": float(v.mean()) for k, v in per_frame.items()},
            **{f"auc_{k}_ci95": confidence_interval(v) for k, v in per_frame.items()}}


def random_maps(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Maps of independent uniform noise: the baseline every ranking must beat."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


MIN_IMAGE = 16
"""Smallest side for SSIM and HOG (two 8-pixel cells a block)."""


def _unit(m: np.ndarray) -> np.ndarray:
    scale = np.abs(m).max()
    return m / scale if scale > 0 else m


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    pairs = zip(a, b, strict=True)
    return float(np.mean([structural_similarity(fa, fb, data_range=2.0) for fa, fb in pairs]))


def _hog(m: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    return np.concatenate([hog(frame, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
                           for frame in m])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Spearman, SSIM and HOG-Pearson of two maps (frames x H x W), each the larger of the
    comparison with ``b`` and with ``-b`` (Huber et al. 2022). Maps that are not images get
    Spearman only (the others are NaN)."""
    a, b = _unit(a), _unit(b)
    rho = stats.spearmanr(a.ravel(), b.ravel()).statistic if a.std() and b.std() else 0.0
    result = {"spearman": float(abs(rho)), "ssim": float("nan"), "hog_pearson": float("nan")}
    if a.ndim == 3 and min(a.shape[1:]) >= MIN_IMAGE:  # images (frames x H x W): also structure
        hog_a = _hog(a)
        result["ssim"] = max(_ssim(a, b), _ssim(a, -b))
        result["hog_pearson"] = max(_pearson(hog_a, _hog(b)), _pearson(hog_a, _hog(-b)))
    return result


def object_saliency(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame: the share of |map| on the objects (``masks``, same shape), the objects' share of
    the area, and whether the map's largest |value| falls on an object (the pointing game)."""
    magnitude = np.abs(maps).reshape(len(maps), -1)
    on = masks.reshape(len(masks), -1)
    total = magnitude.sum(1)
    mass = np.where(total > 0, (magnitude * on).sum(1) / np.where(total > 0, total, 1), 0.0)
    hit = on[np.arange(len(on)), magnitude.argmax(1)] & (total > 0)
    return {"mass": mass, "area": on.mean(1), "pointing": hit.astype(float)}
