"""Unsupported models and bad inputs fail loudly, naming the problem."""

import pytest
import torch
from nets_for_tests import mlp
from torch import nn

import rl_insens as ri


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class FunctionalScaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x / 255.0)


class SharedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


UNSUPPORTED = {
    "tanh": (nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), "Tanh"),
    "gelu": (nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)), "GELU"),
    "batchnorm": (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval(), "BatchNorm1d"),
    "residual": (Residual(), "'b'"),
    "functional": (FunctionalScaling(), "'fc'"),
    "shared": (SharedLayer(), "'fc'"),
    "train_dropout": (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train(), "eval"),
    "reflect_padding": (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
                                      nn.Flatten(), nn.Linear(32, 2)), "reflect"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
@pytest.mark.parametrize("call", ["insens", "switched_projection", "neuron_state", "attribute"])
def test_unsupported_models_raise(case, call):
    model, mentioned = UNSUPPORTED[case]
    shape = (1, 4, 4) if case == "reflect_padding" else (4,)
    x = torch.rand(2, *shape)
    with pytest.raises(ri.UnsupportedModelError, match=mentioned):
        if call == "insens":
            ri.insens(model, x)
        elif call == "switched_projection":
            ri.switched_projection(model, x[0], "0")
        elif call == "neuron_state":
            ri.neuron_state(model, x)
        else:
            ri.attribute(model, x, "gradient")


def test_train_mode_without_dropout_is_fine():
    model = mlp().train()
    assert ri.insens(model, torch.rand(2, 3, 2, 2)).shape == (2, 3, 2, 2)


BAD_INPUTS = {
    "wrong_shape": (torch.rand(2, 3, 3, 3), "shape"),
    "no_batch": (torch.rand(3, 2, 2)[0], "shape"),
    "float64": (torch.rand(2, 3, 2, 2, dtype=torch.float64), "float32"),
    "uint8": (torch.zeros(2, 3, 2, 2, dtype=torch.uint8), "float32"),
    "nan": (torch.full((2, 3, 2, 2), float("nan")), "NaN"),
    "inf": (torch.full((2, 3, 2, 2), float("inf")), "infinite"),
    "not_a_tensor": ([[0.0] * 12], "torch.Tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_value_error(case):
    x, mentioned = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=mentioned):
        ri.insens(mlp().eval(), x)


def test_bad_single_input_for_projection():
    with pytest.raises(ValueError, match="shape"):
        ri.switched_projection(mlp().eval(), torch.rand(5), "1")


def test_bad_layer_and_neurons():
    model, x = mlp().eval(), torch.rand(3, 2, 2)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        ri.switched_projection(model, x, "nope")
    with pytest.raises(ValueError, match="ReLU"):
        ri.switched_projection(model, x, "2")
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        ri.switched_projection(model, x, "1", neurons=[16])


def test_bad_max_memory():
    with pytest.raises(ValueError, match="max_memory must be a positive"):
        ri.insens(mlp().eval(), torch.rand(2, 3, 2, 2), max_memory=0)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown attribution method 'lime'"):
        ri.attribute(mlp().eval(), torch.rand(2, 3, 2, 2), "lime")


@pytest.mark.gpu
def test_device_mismatch():
    with pytest.raises(ValueError, match="cuda"):
        ri.insens(mlp().eval(), torch.rand(2, 3, 2, 2, device="cuda"))
