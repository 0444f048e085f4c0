"""The paper's networks (Appendix B), built from plain modules the engine understands.

TensorFlow's SAME padding is written out as explicit ``nn.ZeroPad2d`` modules (asymmetric
where the stride needs it, as TF pads more at the bottom/right), so every network here is a
chain of ``ZeroPad2d``, ``Conv2d``, ``ReLU``, ``MaxPool2d``, ``Flatten`` and ``Linear``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

ATARI_OBSERVATION_SHAPE = (4, 84, 84)
"""Four stacked 84x84 grayscale frames, channels first."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: ``(before, after)``, the extra pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_conv(
    in_hw: tuple[int, int], in_channels: int, out_channels: int, kernel: int, stride: int
) -> tuple[nn.ZeroPad2d, nn.Conv2d, tuple[int, int]]:
    (top, bottom), (left, right) = (same_padding(s, kernel, stride) for s in in_hw)
    out_hw = (math.ceil(in_hw[0] / stride), math.ceil(in_hw[1] / stride))
    pad = nn.ZeroPad2d((left, right, top, bottom))
    return pad, nn.Conv2d(in_channels, out_channels, kernel, stride), out_hw


class RLNet(nn.Sequential):
    """RLNET (Table 2): the paper's Atari policy network, 4x84x84 frames in [0, 1] to action logits.

    conv 32 8x8/4, conv 64 4x4/3, conv 64 3x3/1, fc 512, fc ``n_actions``; ReLU between,
    SAME padding. Its 20896 hidden neurons are Table 3's count for the paper's Pong agent.
    """

    def __init__(self, n_actions: int = 18) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        hw, channels = ATARI_OBSERVATION_SHAPE[1:], ATARI_OBSERVATION_SHAPE[0]
        for i, (out_channels, kernel, stride) in enumerate([(32, 8, 4), (64, 4, 3), (64, 3, 1)], 1):
            pad, conv, hw = _same_conv(hw, channels, out_channels, kernel, stride)
            layers[f"pad{i}"], layers[f"conv{i}"], layers[f"relu{i}"] = pad, conv, nn.ReLU()
            channels = out_channels
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(channels * hw[0] * hw[1], 512)
        layers["relu4"] = nn.ReLU()
        layers["out"] = nn.Linear(512, n_actions)
        super().__init__(layers)
        self.n_actions = n_actions


class TwoConv(nn.Sequential):
    """2CONV (Table 1): conv 32 5x5, max-pool 2x2, conv 64 5x5, max-pool 2x2, fc 512, fc K.

    ``in_shape`` is ``(channels, height, width)``. Weights are Glorot-uniform and biases zero,
    as the paper's TensorFlow/Keras code had them (``init="torch"`` keeps PyTorch's defaults);
    the initialisation visibly changes how many neurons end up active.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], n_classes: int, init: str = "keras"
    ) -> None:
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (channels, height, width), got {in_shape}")
        channels, hw = in_shape[0], tuple(in_shape[1:])
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out_channels in enumerate([32, 64], 1):
            pad, conv, hw = _same_conv(hw, channels, out_channels, 5, 1)
            layers[f"pad{i}"], layers[f"conv{i}"], layers[f"relu{i}"] = pad, conv, nn.ReLU()
            # For a 2x2 window with stride 2, TF's SAME pooling equals PyTorch's ceil mode.
            layers[f"pool{i}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
            hw, channels = (math.ceil(hw[0] / 2), math.ceil(hw[1] / 2)), out_channels
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(channels * hw[0] * hw[1], 512)
        layers["relu3"] = nn.ReLU()
        layers["out"] = nn.Linear(512, n_classes)
        super().__init__(layers)
        self.in_shape, self.n_classes = tuple(in_shape), n_classes
        if init == "keras":
            keras_init_(self)
        elif init != "torch":
            raise ValueError(f"init must be 'keras' or 'torch', got {init!r}")


def keras_init_(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases on every conv/linear layer (Keras defaults)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def count_hidden_neurons(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Outputs of every conv/linear layer except the last: the paper's "total # neurons"."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(sizes[:-1])
