"""The engine session: one read, one forward pass, every answer; checks, dtypes, threads, grad mode."""

import threading

import pytest
import torch
from nets_for_tests import CUT_NETS, TEST_NETS, build, relative_error
from torch import nn

import rl_insens as ri
from rl_insens.engine import SwitchedModel, insens_reference
from rl_insens.engine.reference import hidden_jacobian


def count_calls(module: nn.Module) -> list:
    """Every run of ``module``'s forward (the engine runs layers without their hooks)."""
    calls, forward = [], module.forward

    def counted(*args):
        calls.append(1)
        return forward(*args)

    module.forward = counted
    return calls


def first_layer(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("name,constructor,shape", TEST_NETS)
def test_view_answers_as_the_free_functions_from_one_forward_pass(name, constructor, shape):
    model = build(constructor)
    torch.manual_seed(5)
    x = torch.randn(4, *shape)
    calls = count_calls(first_layer(model))
    session = SwitchedModel(model)
    view = session(x)
    assert len(calls) == 2  # one trace of the chain, one forward pass
    assert torch.equal(view.logits, model(x))
    assert torch.equal(view.insens(), ri.insens(model, x))
    margins, nearest = view.stability()
    assert torch.equal(margins, ri.engine.stability_margin(model, x)[0])
    assert nearest == ri.engine.stability_margin(model, x)[1]
    state = ri.neuron_state(model, x)
    assert list(view.neurons.layers) == list(state.layers)
    for layer, s in state.layers.items():
        assert torch.equal(view.neurons.layers[layer].active, s.active)
    layer = view.chain.hidden_layers[-1]
    p = view.projection(layer, [0, 1], sample=2)
    q = ri.switched_projection(model, x[2], layer, [0, 1])
    assert torch.equal(p.weight, q.weight) and torch.allclose(p.bias, q.bias, atol=1e-6)  # v: batch of 4 vs 1
    calls.clear()
    view.insens(), view.stability(), view.neurons, view.projection(layer, 0, sample=1)
    session(x)  # the same, unmodified tensor: the kept view
    assert calls == []
    session(x + 0)  # a new batch of the same shape: one forward pass, no new trace
    assert len(calls) == 1


def test_insens_after_stability_reuses_every_neurons_norms():
    model = build(TEST_NETS[0][1])
    x = torch.randn(2, *TEST_NETS[0][2])
    view = SwitchedModel(model)(x)
    view.stability()
    assert torch.allclose(view.insens(), ri.insens(model, x), atol=1e-7)
    assert list(view._norms) == [True]


def test_attribute_on_a_session_shares_its_forward_pass():
    model = build(TEST_NETS[0][1])
    x = torch.randn(3, *TEST_NETS[0][2])
    session = SwitchedModel(model)
    view = session(x)
    calls = count_calls(first_layer(model))
    assert torch.equal(ri.attribute(session, x, "insens"), view.insens())
    assert calls == []
    target = view.logits.argmax(1)
    assert torch.equal(ri.attribute(session, x, "gradient"), ri.attribute(model, x, "gradient", target))


def test_changes_between_consecutive_frames():
    model = build(TEST_NETS[0][1])
    x = torch.randn(4, *TEST_NETS[0][2])
    view = SwitchedModel(model)(x)
    changes = view.changes()
    for layer, state in view.neurons.layers.items():
        a = state.active.flatten(1)
        assert changes[layer]["on"].tolist() == [int((a[t + 1] & ~a[t]).sum()) for t in range(3)]
        assert changes[layer]["off"].tolist() == [int((a[t] & ~a[t + 1]).sum()) for t in range(3)]
        assert (changes[layer]["on"] + changes[layer]["off"]).sum() > 0


# ----- float64 -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,constructor,shape", CUT_NETS)
def test_float64_on_every_cut_matches_the_reference_to_float64_rounding(name, constructor, shape):
    from rl_insens.engine.insens import insens_from_norms
    from rl_insens.engine.norms import squared_norms, valid_cuts

    model = build(constructor).double()
    torch.manual_seed(3)
    x = torch.randn(1 if name == "twoconv" else 2, *shape, dtype=torch.float64)
    expected = insens_reference(model, x)
    result = ri.insens(model, x)
    assert result.dtype == torch.float64
    assert relative_error(result, expected) <= 1e-10
    net = SwitchedModel(model)(x).net
    for cut in valid_cuts(net):
        norms = squared_norms(net, 1 << 30, cut=cut)
        assert all(n.dtype == torch.float64 for n in norms.values())
        assert relative_error(insens_from_norms(net, norms), expected) <= 1e-10, f"cut {cut}"


@pytest.mark.parametrize("name,constructor,shape", CUT_NETS[:-1])  # TwoConv's 7424 rows: too slow here
def test_float64_projection_and_margins_match_the_jacobian(name, constructor, shape):
    model = build(constructor).double()
    torch.manual_seed(4)
    x = torch.randn(1, *shape, dtype=torch.float64)
    view = SwitchedModel(model)(x)
    blocks = list(hidden_jacobian(model, x[0]))
    v_ref, jac_ref = torch.cat([v for v, _ in blocks]), torch.cat([j for _, j in blocks])
    weights = torch.cat([view.projection(layer).weight for layer in view.chain.hidden_layers])
    assert torch.allclose(weights, jac_ref, rtol=0, atol=1e-12)
    norm = jac_ref.flatten(1).pow(2).sum(1)
    distances = torch.where(norm > 0, v_ref.abs() / norm.sqrt(), float("inf"))
    assert float(view.stability()[0][0]) == pytest.approx(float(distances.min()), rel=1e-10)


# ----- checks, in the right order ----------------------------------------------------------------
def mlp():
    return TEST_NETS[2][1]().eval()


@pytest.mark.parametrize("model_dtype,input_dtype,mentioned", [
    (torch.float64, torch.float32, "input has dtype torch.float32; the model is torch.float64"),
    (torch.float32, torch.float64, "input has dtype torch.float64; the model is torch.float32"),
    (torch.float16, torch.float16, "model parameters are torch.float16"),
    (torch.bfloat16, torch.float32, "model parameters are torch.bfloat16"),
])
def test_a_wrong_dtype_gets_its_own_message(model_dtype, input_dtype, mentioned):
    model = mlp().to(model_dtype)
    for call in (lambda x: ri.insens(model, x), lambda x: ri.neuron_state(model, x),
                 lambda x: ri.switched_projection(model, x[0], "1"),
                 lambda x: ri.attribute(model, x, "insens")):
        with pytest.raises(ValueError, match=mentioned):
            call(torch.rand(2, 3, 2, 2).to(input_dtype))


def test_mixed_dtype_model_is_refused():
    model = mlp()
    model[1].double()
    with pytest.raises(ValueError, match="mix dtypes"):
        ri.insens(model, torch.rand(2, 3, 2, 2))


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty"):
        ri.insens(mlp(), torch.rand(0, 3, 2, 2))


# ----- grad mode and threads ---------------------------------------------------------------------
def test_no_autograd_graph_whatever_the_callers_grad_mode():
    model = build(TEST_NETS[0][1])
    shape = TEST_NETS[0][2]
    torch.manual_seed(6)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = ri.insens(model, x), ri.engine.stability_margin(model, x)[0]
        projection = ri.switched_projection(model, x[0], "4.0", [0, 3])
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        view = SwitchedModel(model)(xg)
        p = ri.switched_projection(model, xg[0], "4.0", [0, 3])
        results = [view.logits, view.insens(), view.stability()[0], ri.insens(model, xg),
                   ri.engine.stability_margin(model, xg)[0], p.weight, p.bias, p.centre, p.contributions,
                   ri.decompose(model, xg[0], "4.0"), view.neurons.layers["4.0"].activity,
                   ri.attribute(model, xg, "insens")]
    for result in results:
        assert result.grad_fn is None and not result.requires_grad
    assert torch.equal(results[1], expected[0]) and torch.equal(results[2], expected[1])
    assert torch.equal(p.centre, projection.centre)


def test_concurrent_calls_give_the_serial_maps():
    model = build(TEST_NETS[0][1])
    torch.manual_seed(7)
    inputs = [torch.randn(3, *TEST_NETS[0][2]) for _ in range(8)]
    serial = [ri.insens(model, x) for x in inputs]
    session = SwitchedModel(model)
    results: dict[int, torch.Tensor] = {}
    start = threading.Barrier(len(inputs))

    def work(k):
        start.wait()
        results[k] = session(inputs[k]).insens() if k % 2 else ri.insens(model, inputs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(results[k], serial[k]) for k in range(len(inputs)))


def test_tf32_stays_off_while_any_thread_is_inside_and_comes_back_after_the_last():
    """Thread A enters, B enters, A leaves while B is still inside, B leaves: the switch is
    shared, so TF32 must stay off until B leaves and then be the caller's setting again."""
    from rl_insens.engine.precision import ieee_float32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    flags = []
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with ieee_float32("cuda"):
            a_in.set()
            b_in.wait()
        a_out.set()

    def b():
        a_in.wait()
        with ieee_float32("cuda"):
            b_in.set()
            a_out.wait()
            flags.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))

    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert flags == [(False, False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with ieee_float32("cpu"):  # nothing to switch on a CPU
            assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
