"""The engine against a slow full-Jacobian reference, and Theorem 1 at full size."""

import math
import weakref

import pytest
import torch
from nets_for_tests import CUT_NETS, TEST_NETS, build, relative_error
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import rl_insens as ri
from rl_insens.engine import insens_reference
from rl_insens.engine.reference import hidden_jacobian
from rl_insens.engine.switched import SwitchedNetwork


@pytest.mark.parametrize("name,constructor,shape", TEST_NETS)
def test_insens_matches_full_jacobian(name, constructor, shape):
    model = build(constructor)
    torch.manual_seed(1)
    x = torch.randn(3, *shape)
    assert relative_error(ri.insens(model, x), insens_reference(model, x)) <= 1e-4


@pytest.mark.parametrize("name,constructor,shape", TEST_NETS)
def test_insens_matches_full_jacobian_near_switching(name, constructor, shape):
    """Exact zeros (v = 0 exactly, tied max-pool windows) where float32 and float64 agree."""
    model = build(constructor, seed=2)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.bias.data[::2] = 0.0  # x = 0 then puts these neurons exactly at v = 0
    binary = (torch.rand(2, *shape) > 0.5).float()  # many ties in max-pool windows
    x = torch.cat([torch.zeros(1, *shape), binary])
    assert relative_error(ri.insens(model, x), insens_reference(model, x)) <= 1e-4


def test_insens_small_chunks_give_the_same_result():
    model = build(TEST_NETS[0][1])
    x = torch.randn(2, *TEST_NETS[0][2])
    assert torch.allclose(ri.insens(model, x, max_memory=1), ri.insens(model, x), atol=1e-6)


def test_zero_norm_neurons_count_but_add_nothing():
    """All first-layer neurons off: second-layer ŵ = 0, so only the first layer contributes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    model[0].bias.data.fill_(-100.0)
    model[2].bias.data = torch.tensor([-1.0, 1.0])
    x = torch.rand(1, 4)
    result = ri.insens(model, x)
    assert torch.isfinite(result).all()
    w, b = model[0].weight, model[0].bias
    v = x[0] @ w.T + b
    expected = (v[:, None] * w / (w * w).sum(1, keepdim=True)).sum(0) / 4  # |I| = 3 + 1
    assert torch.allclose(result[0], expected, atol=1e-5)
    assert relative_error(result, insens_reference(model, x)) <= 1e-4


@pytest.mark.parametrize("name,constructor,shape", TEST_NETS)
def test_switched_projection_matches_jacobian_rows(name, constructor, shape):
    model = build(constructor)
    x = torch.randn(*shape)
    blocks = list(hidden_jacobian(model, x))
    v_ref = torch.cat([v for v, _ in blocks])
    jac_ref = torch.cat([j for _, j in blocks])
    chain = ri.engine.read_chain(model, shape)
    offset = 0
    for layer, n in zip(chain.hidden_layers, chain.hidden_sizes, strict=True):
        p = ri.switched_projection(model, x, layer)
        assert torch.allclose(p.activity.double(), v_ref[offset:offset + n], atol=1e-5)
        assert torch.allclose(p.weight.double(), jac_ref[offset:offset + n], atol=1e-5)
        offset += n


def test_centre_and_decomposition():
    model = build(TEST_NETS[0][1])
    x = torch.randn(*TEST_NETS[0][2])
    p = ri.switched_projection(model, x, "4.0")
    nonzero = p.squared_norm > 0
    # The centre lies on the switching hyperplane: x·ŵ at the centre plus b̂ is zero (eq. 4).
    at_centre = (p.centre * p.weight).flatten(1).sum(1) + p.bias
    assert at_centre[nonzero].abs().max() < 1e-4
    contributions = ri.decompose(model, x, "4.0")
    assert torch.allclose(contributions.flatten(1).sum(1)[nonzero], p.activity[nonzero], atol=1e-4)


@pytest.mark.parametrize(
    "model,shape",
    [(ri.RLNet(), (4, 84, 84)), (ri.TwoConv((1, 28, 28), 10), (1, 28, 28))],
    ids=["RLNet", "TwoConv"],
)
def test_theorem_1_at_full_size(model, shape):
    """v = x·ŵ + b̂ to float32 rounding, and ŵ is the true gradient, for every layer."""
    torch.manual_seed(0)
    model.eval()
    x = torch.rand(*shape)
    chain = ri.engine.read_chain(model, shape)
    for i in chain.affine_indices:
        link = chain.links[i]
        neurons = torch.randperm(torch.Size(link.out_shape).numel())[:48]
        p = ri.switched_projection(model, x, link.name, neurons)
        assert torch.allclose((p.weight * x).flatten(1).sum(1) + p.bias, p.activity, atol=1e-4)
        xg = x.clone().requires_grad_(True)
        captured = []
        handle = link.module.register_forward_hook(lambda m, i, o, into=captured: into.append(o))
        model(xg[None])
        handle.remove()
        grad = torch.autograd.grad(captured[0].flatten()[neurons[0]], xg)[0]
        assert torch.allclose(p.weight[0], grad, atol=1e-6)


def test_neuron_state():
    model = build(TEST_NETS[0][1])
    x = torch.randn(5, *TEST_NETS[0][2])
    state = ri.neuron_state(model, x)
    assert list(state.layers) == ["1", "4.0", "7"]
    assert state.n_neurons == 4 * 6 * 7 + 6 * 4 * 5 + 10
    manual = sum(s.activity.flatten(1).gt(0).sum(1) for s in state.layers.values()) / state.n_neurons
    assert torch.allclose(state.active_fraction, manual)
    assert ((state.active_fraction > 0) & (state.active_fraction < 1)).all()


@pytest.mark.gpu
@pytest.mark.parametrize("name,constructor,shape", TEST_NETS)
def test_insens_on_cuda_matches_full_jacobian(name, constructor, shape):
    model = build(constructor)
    torch.manual_seed(1)
    x = torch.randn(4, *shape)
    on_gpu = ri.insens(model.cuda(), x.cuda()).cpu()
    assert relative_error(on_gpu, insens_reference(model.cpu(), x)) <= 1e-4


@pytest.mark.gpu
def test_rlnet_batch_on_cuda_matches_cpu_even_with_tf32_allowed(random_rlnet):
    """The engine turns TF32 off itself: a user's global TF32 setting must not cost exactness."""
    model = random_rlnet(0, bias_shift=0.05)
    x = torch.rand(5, 4, 84, 84)
    on_cpu = ri.insens(model, x)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        on_gpu = ri.insens(model.cuda(), x.cuda()).cpu()
        state = ri.neuron_state(model, x.cuda())
        p = ri.switched_projection(model, x[0].cuda(), "conv3", list(range(0, 3136, 97)))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert relative_error(on_gpu, on_cpu) <= 1e-4
    fc1 = ri.neuron_state(model.cpu(), x).layers["fc1"]
    agree = (state.layers["fc1"].active.cpu() == fc1.active) | (fc1.activity.abs() < 1e-4)
    assert agree.all()
    assert torch.allclose((p.weight * x[0].cuda()).flatten(1).sum(1) + p.bias, p.activity, atol=1e-4)


class PeakMemory(TorchDispatchMode):
    """The most bytes that tensors created inside the block hold at once: the working memory,
    measured op by op without the engine's own estimate (a CPU's resident memory also holds
    what malloc keeps back, which varied 2x from run to run)."""

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[int, list[weakref.ref]] = {}
        self.sizes: dict[int, int] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, refs in self.holders.items() if all(r() is None for r in refs)]:
            del self.holders[key]  # no tensor refers to this storage any more: it was freed
            self.now -= self.sizes.pop(key)
        for tensor in (t for t in tree_leaves(out) if isinstance(t, torch.Tensor)):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in self.holders:
                self.holders[storage.data_ptr()], self.sizes[storage.data_ptr()] = [], storage.nbytes()
                self.now += storage.nbytes()
            self.holders[storage.data_ptr()].append(weakref.ref(tensor))
        self.peak = max(self.peak, self.now)
        return out


@pytest.mark.slow
def test_max_memory_sets_how_many_frames_go_at_once(monkeypatch, random_rlnet):
    """Equal chunks of frames, as many as keep the working memory within the bound (with the
    batch-wide forward pass and results on top, as the CUDA test allows)."""
    from rl_insens.engine import norms

    chunks = []
    chunk_norms = norms._chunk_norms
    monkeypatch.setattr(norms, "_chunk_norms",
                        lambda net, cut, every: chunks.append(net.batch) or chunk_norms(net, cut, every))
    model = random_rlnet(0, bias_shift=0.05)
    x = torch.rand(12, 4, 84, 84)
    bound = 256 << 20
    with PeakMemory() as bounded:
        result = ri.insens(model, x, max_memory=bound)
    assert sum(chunks) == 12 and len(chunks) > 1 and len(set(chunks)) == 1  # equal chunks
    assert bounded.peak <= 1.25 * bound, f"{bounded.peak >> 20} MiB used under a {bound >> 20} MiB bound"
    chunks.clear()
    with PeakMemory() as unbounded:
        whole = ri.insens(model, x, max_memory=4 << 30)
    # equal up to float32 rounding: lists padded to a chunk's fullest window sum in another order
    torch.testing.assert_close(whole, result, rtol=1e-5, atol=1e-6 * float(result.abs().max()))
    assert chunks == [12] and unbounded.peak > bound  # all at once would not have fitted


@pytest.mark.gpu
def test_max_memory_bounds_the_working_memory_on_cuda():
    torch.manual_seed(0)
    model = ri.RLNet().eval().cuda()
    x = torch.rand(32, 4, 84, 84, device="cuda")
    for bound in (256 << 20, 1 << 30):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        ri.insens(model, x, max_memory=bound)
        used = torch.cuda.max_memory_allocated() - start
        assert used <= 1.25 * bound, f"{used >> 20} MiB used under a {bound >> 20} MiB bound"


def test_engine_restores_the_callers_tf32_settings():
    from rl_insens.engine.precision import ieee_float32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with ieee_float32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        model = build(TEST_NETS[0][1])
        ri.insens(model, torch.randn(1, *TEST_NETS[0][2]))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("name,constructor,shape", CUT_NETS)
def test_every_cut_is_exact(name, constructor, shape):
    """Patches up to any cut, then Gram forms after it, agree with the full Jacobian."""
    from rl_insens.engine.insens import insens_from_norms
    from rl_insens.engine.norms import squared_norms, valid_cuts
    from rl_insens.engine.switched import SwitchedNetwork

    model = build(constructor)
    torch.manual_seed(3)
    x = torch.randn(2, *shape)
    net = SwitchedNetwork(ri.engine.read_chain(model, shape), x)
    expected = insens_reference(model, x)
    cuts = valid_cuts(net)
    assert len(cuts) > 1 or name in ("mlp", "wrapped_trunk")
    for cut in cuts:
        result = insens_from_norms(net, squared_norms(net, 1 << 30, cut=cut))
        assert relative_error(result, expected) <= 1e-4, f"cut {cut}"


def test_batch_equals_one_by_one_on_rlnet(random_rlnet):
    """A batch of real-size Pong-shaped inputs gives each frame's own Insens."""
    model = random_rlnet(0, bias_shift=0.05)
    x = torch.rand(3, 4, 84, 84)
    together = ri.insens(model, x)
    alone = torch.cat([ri.insens(model, x[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-7, rtol=1e-5)
    assert torch.allclose(ri.insens(model, x, max_memory=1 << 26), together, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name,constructor,shape", CUT_NETS)
def test_stability_margin_is_the_nearest_switching_hyperplane(name, constructor, shape):
    model = build(constructor)
    torch.manual_seed(4)
    x = torch.randn(2, *shape)
    margins, nearest = ri.engine.stability_margin(model, x)
    chain = ri.engine.read_chain(model, shape)
    state = SwitchedNetwork(chain, x)  # v as the network computes it (float32)
    v_all = torch.cat([state.activity(i).flatten(1) for i in chain.hidden_indices], 1)
    sizes = [math.prod(chain.links[i].out_shape) for i in chain.hidden_indices]
    offsets = dict(zip(chain.hidden_layers, [sum(sizes[:k]) for k in range(len(sizes))], strict=True))
    for b in range(2):
        norm = torch.cat([jac.flatten(1).pow(2).sum(1) for _, jac in hidden_jacobian(model, x[b])])
        distances = torch.where(norm > 0, v_all[b].double().abs() / norm.sqrt(), float("inf"))
        expected = float(distances.min())
        assert float(margins[b]) == pytest.approx(expected, rel=1e-4)
        layer, index = nearest[b]
        assert float(distances[offsets[layer] + index]) == pytest.approx(expected, rel=1e-4)


