"""One entry point for Insens and the baseline attribution methods.

Each method is a function ``(model, x, target) -> map`` in :data:`METHODS`; adding a method is
adding one function here. Baselines come from Captum (gradient, integrated gradients) and
Zennit (the LRP family); Zennit composites are registered for one call and removed after it,
since two composites on one model stack their hooks and corrupt each other's results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base
from zennit.core import Composite
from zennit.rules import AlphaBeta, Epsilon, ZBox, ZPlus
from zennit.types import Convolution, Linear

from .engine import SwitchedModel, session_of

IG_STEPS = 50
"""Integrated-gradients steps along the straight path from the all-zero baseline."""
LRP_EPSILON = 1e-6
"""ε of LRP-ε: only a stabiliser, as in the iNNvestigate toolbox the paper used."""
INPUT_BOUNDS = (0.0, 1.0)
"""Box of possible input values for deep Taylor's first layer (frames and images in [0, 1])."""

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _gradient(model, x, target):
    return Saliency(model).attribute(x.detach().clone().requires_grad_(True), target=target, abs=False)


def _integrated_gradients(model, x, target):
    return IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=IG_STEPS
    )


def _lrp(composite: Composite, model: nn.Module, x: torch.Tensor, target: torch.Tensor):
    def target_output(output: torch.Tensor) -> torch.Tensor:
        # LRP starts from the target's output value, as in the paper's toolbox (iNNvestigate).
        return torch.zeros_like(output).scatter_(1, target[:, None], output.gather(1, target[:, None]))

    with Gradient(model, composite) as attributor:  # hooks live only inside this block
        _, relevance = attributor(x.detach().clone(), target_output)
    return relevance


def _lrp_epsilon(model, x, target):
    rules = layer_map_base() + [(Convolution, Epsilon(LRP_EPSILON)), (Linear, Epsilon(LRP_EPSILON))]
    return _lrp(LayerMapComposite(rules), model, x, target)


def _lrp_alpha1beta0(model, x, target):
    rule = AlphaBeta(alpha=1.0, beta=0.0)
    return _lrp(LayerMapComposite(layer_map_base() + [(Convolution, rule), (Linear, rule)]), model, x, target)


def _deep_taylor(model, x, target):
    """z⁺ in hidden layers and the z^B (bounded box) rule in the first layer."""
    low = min(INPUT_BOUNDS[0], float(x.min()))
    high = max(INPUT_BOUNDS[1], float(x.max()))
    composite = SpecialFirstLayerMapComposite(
        layer_map_base() + [(Convolution, ZPlus()), (Linear, ZPlus())],
        first_map=[((Convolution, Linear), ZBox(low, high))],
    )
    return _lrp(composite, model, x, target)


def _insens(model, x, target):
    return session_of(model)(x).insens()


METHODS: dict[str, Method] = {
    "insens": _insens,
    "gradient": _gradient,
    "integrated_gradients": _integrated_gradients,
    "lrp_epsilon": _lrp_epsilon,
    "lrp_alpha1beta0": _lrp_alpha1beta0,
    "deep_taylor": _deep_taylor,
}


def attribute(
    model: nn.Module | SwitchedModel,
    x: torch.Tensor,
    method: str,
    target: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Attribution map of ``method`` for a batch ``x``.

    Args:
        model: a chain the engine accepts, or an engine session
            (:class:`~rl_insens.engine.SwitchedModel`), whose forward pass at ``x`` then gives the
            default target and Insens, shared with whatever else asked it about ``x``.
        x: a batch ``[B, *input shape]``.
        method: ``insens``, ``gradient``, ``integrated_gradients`` (Captum, 50 steps from a zero
            baseline), ``lrp_epsilon``, ``lrp_alpha1beta0`` or ``deep_taylor`` (Zennit).
        target: the output explained, an index or one per sample; each sample's arg-max output
            when None. Insens explains no particular output and ignores it.

    Returns:
        The maps, ``x``'s shape.

    >>> maps = attribute(RLNet().eval(), frames, "lrp_epsilon")
    >>> session = SwitchedModel(agent.network); view = session(x)
    >>> logits, insens = view.logits, attribute(session, x, "insens")   # one forward pass
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {sorted(METHODS)}")
    session = session_of(model)
    view = session(x)  # the same model and input checks for every method
    if target is None:
        target = view.logits.argmax(1)
    target = torch.as_tensor(target, device=x.device)
    if target.is_floating_point() or target.dim() > 1 or target.numel() not in (1, x.shape[0]):
        raise ValueError(f"target must be one output index or one per sample ({x.shape[0]}), "
                         f"got {target.dtype} of shape {list(target.shape)}")
    target = target.long().expand(x.shape[0]).clone()
    n_outputs = view.logits.shape[1]
    if target.min() < 0 or target.max() >= n_outputs:
        raise ValueError(f"target must lie in 0..{n_outputs - 1}, the model's outputs; got {target.tolist()}")
    result = METHODS[method](session if method == "insens" else session.model, x, target)
    return result.detach()
