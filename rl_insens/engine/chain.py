"""Reading a model into the chain of layers the switched-projection engine can follow.

The engine only trusts what it has seen: it runs the model once with hooks on every leaf
module and accepts the model only if those leaves, in call order, form a chain (each one's
input is the previous one's output, the first takes the model's input, the last gives the
model's output) of supported layer types. Anything else, a functional op between modules,
a residual add or an unsupported layer, raises :class:`UnsupportedModelError`: a wrong map
would be worse than no map.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from torch import nn

AFFINE = (nn.Conv2d, nn.Linear)
"""Layers whose outputs are neurons."""
RESHAPING = (nn.Flatten, nn.Identity, nn.Dropout)
"""Layers that move values but change none (dropout only in eval mode)."""
SUPPORTED = AFFINE + RESHAPING + (nn.ReLU, nn.MaxPool2d, nn.ZeroPad2d)


_tracing = threading.Lock()
"""One trace at a time: hooks are per module, so two traces of one model would see each other."""


class UnsupportedModelError(TypeError):
    """The model is not a plain chain of layers whose switched projection is exact."""


@dataclass(frozen=True)
class Link:
    """One layer of the chain, with the per-sample shapes it takes and gives."""

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def is_affine(self) -> bool:
        return isinstance(self.module, AFFINE)


@dataclass(frozen=True)
class Chain:
    """A model read as a chain. Hidden layers: every affine link but the output layer."""

    links: tuple[Link, ...]
    in_shape: tuple[int, ...]

    @property
    def affine_indices(self) -> list[int]:
        return [i for i, link in enumerate(self.links) if link.is_affine]

    @property
    def hidden_indices(self) -> list[int]:
        return self.affine_indices[:-1]

    @property
    def hidden_layers(self) -> list[str]:
        return [self.links[i].name for i in self.hidden_indices]

    @property
    def hidden_sizes(self) -> list[int]:
        return [math.prod(self.links[i].out_shape) for i in self.hidden_indices]

    def index_of(self, layer: str) -> int:
        for i, link in enumerate(self.links):
            if link.name == layer:
                if not link.is_affine:
                    raise ValueError(
                        f"layer {layer!r} is a {type(link.module).__name__}; neurons are the outputs "
                        f"of Conv2d/Linear layers: {[self.links[j].name for j in self.affine_indices]}"
                    )
                return i
        raise ValueError(f"no layer named {layer!r}; layers with neurons: "
                         f"{[self.links[j].name for j in self.affine_indices]}")


def _check_module(name: str, module: nn.Module) -> None:
    label = f"{name!r} ({type(module).__name__})"
    if not isinstance(module, SUPPORTED):
        raise UnsupportedModelError(
            f"module {label} is not supported: the switched projection is exact only for chains of "
            "Conv2d, Linear, ReLU, MaxPool2d, ZeroPad2d, Flatten, Identity and eval-mode Dropout"
        )
    if isinstance(module, nn.Dropout) and module.training and module.p > 0:
        raise UnsupportedModelError(f"module {label} is active dropout; call model.eval() first")
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise UnsupportedModelError(f"module {label} pads with {module.padding_mode!r}; only zeros")
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        raise UnsupportedModelError(f"module {label} returns indices; the chain must pass tensors")


def read_chain(model: nn.Module, in_shape: tuple[int, ...], device=None, dtype=None) -> Chain:
    """Trace ``model`` on a zero input of per-sample shape ``in_shape`` and return its chain.

    The probe has the model's own dtype and device unless told otherwise.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    problems: list[str] = []

    tracer = threading.get_ident()

    def record(name):
        def hook(module, args, kwargs, output):
            if threading.get_ident() != tracer:
                return  # another thread's forward pass through the same model
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                problems.append(f"module {name!r} is called with other than one tensor")
            elif not isinstance(output, torch.Tensor):
                problems.append(f"module {name!r} returns {type(output).__name__}, not a tensor")
            else:
                calls.append((name, module, args[0], output))

        return hook

    # Leaves do the work; an empty container just hands its input on.
    leaves = [(n, m) for n, m in model.named_modules()
              if not list(m.children()) and not isinstance(m, (nn.Sequential, nn.ModuleList))]
    if not leaves:
        raise UnsupportedModelError("model has no layers")
    param = next(model.parameters(), None)
    x = torch.zeros(1, *in_shape, device=device if device is not None or param is None else param.device,
                    dtype=dtype if dtype is not None or param is None else param.dtype)
    with _tracing:
        hooks = [m.register_forward_hook(record(n), with_kwargs=True) for n, m in leaves]
        try:
            with torch.no_grad():
                out = model(x)
        except RuntimeError as error:
            raise ValueError(f"the model cannot take an input of shape {list(in_shape)}: {error}") from None
        finally:
            for hook in hooks:
                hook.remove()
    if problems:
        raise UnsupportedModelError(problems[0])
    if not calls:
        raise UnsupportedModelError("no layer of the model ran in its forward pass")

    links, expected, seen = [], x, set()
    for name, module, inp, output in calls:
        _check_module(name, module)
        if id(module) in seen:
            raise UnsupportedModelError(f"module {name!r} is called twice; weights must not be shared")
        seen.add(id(module))
        if inp is not expected:
            where = "the model's input" if expected is x else f"the output of {links[-1].name!r}"
            raise UnsupportedModelError(
                f"module {name!r} does not take {where}: the forward pass does something between "
                "modules (a functional op, a residual add, a reshape); write it as a chain of modules"
            )
        links.append(Link(name, module, tuple(inp.shape[1:]), tuple(output.shape[1:])))
        expected = output
    if out is not expected:
        raise UnsupportedModelError(
            f"the model's output is not the output of its last module {links[-1].name!r}"
        )
    chain = Chain(tuple(links), tuple(in_shape))
    if not chain.affine_indices:
        raise UnsupportedModelError("model has no Conv2d or Linear layer")
    return chain


ENGINE_DTYPES = (torch.float32, torch.float64)
"""The engine computes in the model's dtype: float32, or float64 for reference checks."""


def check_input(model: nn.Module, x: torch.Tensor, batched: bool) -> None:
    """Reject inputs the engine would silently mis-handle, saying what would be accepted.

    Runs before the model is traced, so that a wrong dtype or device gets its own message
    rather than whatever the first layer says about it.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if batched and x.dim() < 2:
        raise ValueError(f"expected a batch [B, *input], got shape {list(x.shape)}")
    if batched and x.shape[0] == 0:
        raise ValueError(f"the batch is empty (shape {list(x.shape)}); give at least one input")
    param = next(model.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    if any(p.dtype != dtype for p in model.parameters()):
        raise ValueError(f"model parameters mix dtypes {sorted({str(p.dtype) for p in model.parameters()})}; "
                         "the engine works in one")
    if dtype not in ENGINE_DTYPES:
        raise ValueError(f"model parameters are {dtype}; the engine works in torch.float32 or torch.float64 "
                         "(convert the model with model.float())")
    if x.dtype != dtype:
        raise ValueError(f"input has dtype {x.dtype}; the model is {dtype}, and the engine works in the "
                         f"model's dtype (convert uint8 frames with x.to({dtype}) / 255)")
    if param is not None and param.device != x.device:
        raise ValueError(f"input is on {x.device} but the model is on {param.device}")
    if not torch.isfinite(x).all():
        raise ValueError("input contains NaN or infinite values")
