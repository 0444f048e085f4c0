"""The window path (two leading convs read through the first layer's Gram, then a conv and a
linear layer read window by window) against every neuron's full-Jacobian row, in float32 and
float64, on small networks that vary each geometric choice the path depends on."""

import pytest
import torch
from torch import nn

import rl_insens as ri
from rl_insens.engine import norms as engine_norms
from rl_insens.engine.reference import hidden_jacobian
from rl_insens.engine.switched import SwitchedNetwork
from rl_insens.engine.window_gram import match_conv_pair, match_conv_then_linear


def with_head(trunk: list[nn.Module], shape: tuple[int, ...], outputs: int = 3) -> nn.Module:
    """``trunk`` then flatten, a hidden linear layer and an output layer sized to fit."""
    size = nn.Sequential(*trunk, nn.Flatten())(torch.zeros(1, *shape)).shape[1]
    return nn.Sequential(*trunk, nn.Flatten(), nn.Linear(size, 7), nn.ReLU(), nn.Linear(7, outputs))


def atari_like():
    """SAME-style asymmetric pads between layers, strides that do not divide, a conv padding."""
    return [nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(2, 5, 4, stride=3), nn.ReLU(),
            nn.ZeroPad2d((0, 1, 1, 0)), nn.Conv2d(5, 6, 3, stride=2), nn.ReLU(),
            nn.Conv2d(6, 4, 3, padding=1), nn.ReLU()], (2, 23, 19)


def dilated():
    """Dilation and padding inside the convs themselves, windows wider than the image's border."""
    return [nn.Conv2d(1, 3, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.Identity(),
            nn.Conv2d(3, 4, 2, padding=1, dilation=2), nn.ReLU(),
            nn.Conv2d(4, 3, 2, stride=2, dilation=2), nn.ReLU()], (1, 11, 13)


def pair_then_linear():
    """Two convs straight into the linear layers: the pair's Gram, then the generic forms."""
    return [nn.Conv2d(2, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 5, 2), nn.ReLU()], (2, 9, 10)


def pair_then_two_convs():
    """Two more convs after the pair: the pair's Gram, then the generic column push."""
    return [nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
            nn.Conv2d(4, 3, 2), nn.ReLU(), nn.Conv2d(3, 2, 2), nn.ReLU()], (1, 14, 14)


NETS = {"atari_like": atari_like, "dilated": dilated, "pair_then_linear": pair_then_linear,
        "pair_then_two_convs": pair_then_two_convs}


def build(name: str, dtype: torch.dtype, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    trunk, shape = NETS[name]()
    model = with_head(trunk, shape).to(dtype).eval()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.bias.data -= 0.1  # about a third of the units active, as in trained agents
    return model, shape


def every_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """‖ŵ‖² of every hidden neuron at each input, from full Jacobian rows in float64."""
    return torch.stack([torch.cat([jac.flatten(1).pow(2).sum(1) for _, jac in hidden_jacobian(model, sample)])
                        for sample in x])


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("name", NETS)
def test_window_path_matches_every_jacobian_row(name, dtype, tolerance):
    model, shape = build(name, dtype)
    torch.manual_seed(1)
    x = torch.randn(3, *shape, dtype=dtype)
    net = SwitchedNetwork(ri.engine.read_chain(model, shape), x)
    pair = match_conv_pair(net)
    assert pair is not None
    assert (match_conv_then_linear(net, pair.cut) is not None) == (name in ("atari_like", "dilated"))
    found = engine_norms.squared_norms(net, 1 << 30, cut=pair.cut, all_neurons=True)
    found = torch.cat([found[i].flatten(1) for i in net.chain.hidden_indices], 1).double()
    expected = every_norm(model, x)
    assert float((found - expected).abs().max() / expected.abs().max()) <= tolerance


@pytest.mark.parametrize("name", NETS)
def test_insens_on_the_window_path_matches_the_reference(name):
    model, shape = build(name, torch.float32, seed=2)
    torch.manual_seed(3)
    x = torch.cat([torch.zeros(1, *shape), (torch.rand(2, *shape) > 0.5).float()])  # exact zeros, ties
    expected = ri.engine.insens_reference(model, x)
    assert float((ri.insens(model, x) - expected).abs().max() / expected.abs().max()) <= 1e-4


def test_the_first_layers_gram_follows_the_weights():
    """The Gram formed from the weights is kept per weight version: a weight changed in place
    (an optimiser step) is seen on the next call."""
    model, shape = build("atari_like", torch.float64)
    x = torch.randn(2, *shape, dtype=torch.float64)
    session = ri.SwitchedModel(model)
    session(x).insens()
    with torch.no_grad():
        model[1].weight.mul_(1.5)
        model[4].weight.add_(0.1)
    expected = ri.engine.insens_reference(model, x)
    assert float((ri.SwitchedModel(model)(x).insens() - expected).abs().max() / expected.abs().max()) <= 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_input_space_forms_after_the_cut_match_every_jacobian_row(dtype, tolerance, monkeypatch):
    """A small input and only linear layers after the cut: the cut units' ŵ are written out in
    input space instead of forming their Gram (2CONV on MNIST takes this path)."""
    written = []
    of = engine_norms._InputSpace.of
    monkeypatch.setattr(engine_norms._InputSpace, "of", lambda *args: written.append(1) or of(*args))
    torch.manual_seed(0)
    model = ri.TwoConv((1, 12, 12), 4).to(dtype).eval()
    torch.manual_seed(1)
    x = torch.rand(3, 1, 12, 12, dtype=dtype)
    net = SwitchedNetwork(ri.engine.read_chain(model, (1, 12, 12)), x)
    cut = engine_norms.valid_cuts(net)[-1]  # after the second max-pool
    found = engine_norms.squared_norms(net, 1 << 30, cut=cut, all_neurons=True)
    assert written
    found = torch.cat([found[i].flatten(1) for i in net.chain.hidden_indices], 1).double()
    expected = every_norm(model, x)
    assert float((found - expected).abs().max() / expected.abs().max()) <= tolerance
