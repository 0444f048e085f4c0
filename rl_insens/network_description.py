"""Networks as data: a plain chain of layers as JSON (each layer's type, constructor arguments
and dotted name, in call order), and the network rebuilt from it.

Run directories store agents this way so that opening one never unpickles anything.
"""

from __future__ import annotations

import json

import torch
from torch import nn

LAYERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                           "dilation", "groups", "padding_mode")),
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "ReLU": (nn.ReLU, ()),
    "Tanh": (nn.Tanh, ()),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "ZeroPad2d": (nn.ZeroPad2d, ("padding",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Identity": (nn.Identity, ()),
    "Dropout": (nn.Dropout, ("p",)),
}
"""Layer types a recorded network may hold, with the attributes that rebuild each."""


def layer_description(name: str, module: nn.Module) -> dict:
    """One layer as data; a ``ValueError`` for a layer type not in :data:`LAYERS`."""
    kind = type(module).__name__
    if kind not in LAYERS or type(module) is not LAYERS[kind][0]:
        raise ValueError(f"layer {name!r} ({kind}) cannot be stored in a run directory; "
                         f"supported: {', '.join(LAYERS)}")
    args = {a: getattr(module, a) for a in LAYERS[kind][1]}
    if kind in ("Conv2d", "Linear"):
        args["bias"] = module.bias is not None
    return {"name": name, "type": kind, "args": json.loads(json.dumps(args))}


def build_layer(spec: dict) -> nn.Module:
    """The layer a :func:`layer_description` describes."""
    cls, names = LAYERS[spec["type"]]
    args = spec["args"]
    unknown = set(args) - set(names) - {"bias"}
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)} for layer {spec['name']!r}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


def leaves_in_call_order(model: nn.Module, in_shape: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """The model's leaf modules in the order one forward pass calls them."""
    calls: list[tuple[str, nn.Module]] = []
    leaves = [(n, m) for n, m in model.named_modules()  # an empty Sequential only passes x on
              if not list(m.children()) and not isinstance(m, nn.Sequential)]
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.append((n, m))) for n, m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return calls


class ChainNetwork(nn.Module):
    """A network rebuilt from its description: leaves under their original dotted names,
    called one after the other in their recorded order."""

    def __init__(self, layers: list[dict]) -> None:
        super().__init__()
        self.order = []
        for spec in layers:
            *path, leaf = spec["name"].split(".")
            parent: nn.Module = self
            for part in path:
                if part not in parent._modules:
                    parent.add_module(part, nn.Module())
                parent = parent._modules[part]
            parent.add_module(leaf, build_layer(spec))
            self.order.append(spec["name"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = self.get_submodule(name)(x)
        return x


def describe(model: nn.Module, in_shape: tuple[int, ...]) -> dict:
    """A JSON description of a plain chain of layers (checked by rebuilding it)."""
    layers = [layer_description(n, m) for n, m in leaves_in_call_order(model, in_shape)]
    if any(not spec["name"] for spec in layers):
        raise ValueError("a network that is a single layer cannot be stored in a run directory")
    rebuilt = ChainNetwork(layers).to(next(model.parameters()).device)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, *in_shape, device=next(model.parameters()).device)
    with torch.no_grad():
        if not torch.equal(rebuilt.eval()(x), model(x)):
            raise ValueError("the network does more than call its layers in a chain; "
                             "it cannot be stored in a run directory")
    return {"layers": layers}
