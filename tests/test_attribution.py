"""Baselines: hand-computed values on a tiny network, and sane maps on the paper's networks."""

import pytest
import torch
from torch import nn

import rl_insens as ri


@pytest.fixture
def tiny():
    """x (3) -> ReLU(W1 x) (4) -> W2 h (2), zero biases, one hidden neuron off at x."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].weight.data = torch.tensor(
        [[1.0, -2.0, 0.5], [0.3, 0.8, -0.4], [-1.0, -1.0, -1.0], [2.0, 0.1, -0.3]]
    )
    model[2].weight.data = torch.tensor([[0.5, -1.0, 2.0, 0.7], [-0.2, 0.4, 0.1, -0.6]])
    for layer in (model[0], model[2]):
        layer.bias.data.zero_()
    x = torch.tensor([[0.9, 0.2, 0.6]])
    return model.eval(), x


def hand_values(model, x, target=0):
    w1, w2 = model[0].weight.double(), model[2].weight.double()[target]
    x = x[0].double()
    z = w1 @ x
    h = z.clamp_min(0)
    y = w2 @ h
    gradient = w1.T @ (w2 * (z > 0))
    # LRP: relevance starts at the output value y and is redistributed layer by layer.
    contrib_out = h * w2
    alpha_hidden = y * contrib_out.clamp_min(0) / contrib_out.clamp_min(0).sum()
    contrib_in = x[None] * w1  # [hidden, input]
    positive = contrib_in.clamp_min(0)
    share = positive / positive.sum(1, keepdim=True).clamp_min(1e-12)  # a row of zeros passes 0
    alpha_input = (alpha_hidden[:, None] * share).sum(0)
    zplus_hidden = y * (h * w2.clamp_min(0)) / (h * w2.clamp_min(0)).sum()
    low, high = 0.0, 1.0
    box = contrib_in - low * w1.clamp_min(0) - high * w1.clamp_max(0)
    deep_taylor = (zplus_hidden[:, None] * box / box.sum(1, keepdim=True)).sum(0)
    return {
        "gradient": gradient,
        "lrp_epsilon": x * gradient,  # ε → 0, zero biases: LRP-ε is input × gradient
        "lrp_alpha1beta0": alpha_input,
        "deep_taylor": deep_taylor,
        "integrated_gradients": x * gradient,  # the network is linear on the path from 0 to x
    }


@pytest.mark.parametrize(
    "method", ["gradient", "lrp_epsilon", "lrp_alpha1beta0", "deep_taylor", "integrated_gradients"]
)
def test_baselines_match_hand_computation(tiny, method):
    model, x = tiny
    expected = hand_values(model, x)[method]
    result = ri.attribute(model, x, method, target=0)
    assert torch.allclose(result[0].double(), expected, atol=1e-5), (result, expected)


def test_default_target_is_argmax(tiny):
    model, x = tiny
    assert int(model(x).argmax()) == 0
    assert torch.equal(ri.attribute(model, x, "gradient"), ri.attribute(model, x, "gradient", target=0))


def test_methods_do_not_leak_hooks(tiny):
    """Zennit composites are removed after each call, so later results are unaffected."""
    model, x = tiny
    before = ri.attribute(model, x, "gradient", target=1)
    for method in ("lrp_epsilon", "lrp_alpha1beta0", "deep_taylor"):
        ri.attribute(model, x, method, target=1)
    assert torch.equal(ri.attribute(model, x, "gradient", target=1), before)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_insens_method_is_the_engine(tiny):
    model, x = tiny
    assert torch.equal(ri.attribute(model, x, "insens"), ri.insens(model, x))


@pytest.mark.parametrize(
    "model,shape",
    [(ri.RLNet(), (4, 84, 84)), (ri.TwoConv((1, 28, 28), 10), (1, 28, 28))],
    ids=["RLNet", "TwoConv"],
)
@pytest.mark.parametrize("method", sorted(ri.METHODS))
def test_methods_on_paper_networks(model, shape, method):
    torch.manual_seed(0)
    x = torch.rand(1 if method == "insens" else 2, *shape)
    result = ri.attribute(model.eval(), x, method, target=torch.tensor([1, 3])[: len(x)])
    assert result.shape == x.shape
    assert torch.isfinite(result).all()
    assert result.abs().sum() > 0
