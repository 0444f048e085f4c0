"""The paper's networks: Table 3's neuron counts and TensorFlow's SAME padding."""

import pytest
import torch

import rl_insens as ri
from rl_insens.nets import count_hidden_neurons, same_padding


@pytest.mark.parametrize(
    "model,shape,count",
    [
        (ri.RLNet(), (4, 84, 84), 20896),
        (ri.TwoConv((1, 28, 28), 10), (1, 28, 28), 38144),
        (ri.TwoConv((3, 24, 24), 10), (3, 24, 24), 28160),
        (ri.TwoConv((1, 96, 96), 5), (1, 96, 96), 442880),
    ],
    ids=["RLNET", "2CONV-MNIST", "2CONV-CIFAR10", "2CONV-smallNORB"],
)
def test_hidden_neuron_counts_match_table_3(model, shape, count):
    assert count_hidden_neurons(model, shape) == count
    assert ri.neuron_state(model.eval(), torch.rand(1, *shape)).n_neurons == count


def test_same_padding_is_tensorflows():
    assert same_padding(84, 8, 4) == (2, 2)
    assert same_padding(21, 4, 3) == (0, 1)  # odd total: the extra pixel goes after
    assert same_padding(7, 3, 1) == (1, 1)
    assert same_padding(28, 5, 1) == (2, 2)
    assert same_padding(10, 1, 2) == (0, 0)


def test_network_shapes():
    assert ri.RLNet()(torch.rand(2, 4, 84, 84)).shape == (2, 18)
    assert ri.TwoConv((1, 27, 27), 7)(torch.rand(2, 1, 27, 27)).shape == (2, 7)


def test_twoconv_keras_initialisation():
    model = ri.TwoConv((1, 28, 28), 10)
    layers = [model.conv1, model.conv2, model.fc1, model.out]
    assert all(float(layer.bias.detach().abs().max()) == 0 for layer in layers)
    limit = (6 / (25 * 1 + 25 * 32)) ** 0.5  # Glorot: fan_in + fan_out of a 5x5 conv
    assert float(model.conv1.weight.abs().max()) <= limit * (1 + 1e-6)  # float32 rounding of the bound
    with pytest.raises(ValueError, match="init"):
        ri.TwoConv((1, 28, 28), 10, init="he")
