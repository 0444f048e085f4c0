"""Small random networks that exercise every supported layer, and the error the engine tests
measure against the full-Jacobian reference (shared by the engine test files)."""

import pytest
import torch
from torch import nn

import rl_insens as ri


def strided_asymmetric() -> nn.Module:
    """Strides, an asymmetric pad, an overlapping max-pool (3x3, stride 2) and a nested Sequential."""
    return nn.Sequential(
        nn.ZeroPad2d((0, 1, 1, 0)),
        nn.Conv2d(2, 4, 3, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Sequential(nn.Conv2d(4, 6, 2, padding=1), nn.ReLU(inplace=True)),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6 * 4 * 5, 10),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(10, 3),
    )


def non_overlapping_pool() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(5, 4, 3, stride=2, dilation=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)
    )


class WrappedTrunk(nn.Module):
    """A user's own module: a trunk and a head called in sequence in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        return self.head(self.trunk(x))


# (name, constructor, per-sample input shape)
TEST_NETS = [
    ("strided_asymmetric", strided_asymmetric, (2, 13, 14)),
    ("non_overlapping_pool", non_overlapping_pool, (1, 12, 12)),
    ("mlp", mlp, (3, 2, 2)),
    ("wrapped_trunk", WrappedTrunk, (2, 8, 8)),
]


def build(constructor, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return constructor().eval()


def pong_like() -> nn.Module:
    """RLNET's shape in small: SAME pads (one asymmetric), strides, a dilated conv, a conv pad."""
    return nn.Sequential(
        nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(2, 4, 4, stride=2), nn.ReLU(),
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(4, 5, 3, stride=2), nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 3),
    )


CUT_NETS = TEST_NETS + [("pong_like", pong_like, (2, 15, 15)),
                        pytest.param("twoconv", lambda: ri.TwoConv((1, 12, 12), 4), (1, 12, 12),
                                     marks=pytest.mark.slow)]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())
