"""One read of the model, one forward pass per batch, every answer from that pass.

:class:`SwitchedModel` reads a model into its chain once per input shape. Calling it on a
batch runs the forward pass once, recording the state every question needs (activities,
ReLU masks, max-pool winners: Theorem 1's switched network), and gives a
:class:`SwitchedView` that answers from it: logits, neuron state, Insens, stability margins,
switched projections and state changes, each computed on first use and kept.

Every entry turns gradients off (the engine never builds an autograd graph, whatever the
caller's grad mode) and, on CUDA, TF32 (:mod:`.precision`). Views are safe to share between
threads: what they keep is only ever replaced by an equal value.

The free functions below (:func:`insens`, :func:`neuron_state`, ...) are one-call sessions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .chain import Chain, UnsupportedModelError, check_input, read_chain
from .insens import insens_from_norms, margins_from_norms
from .norms import squared_norms
from .precision import ieee_float32
from .projection import SwitchedProjection, project, resolve_max_memory
from .state import LayerState, NeuronState
from .switched import SwitchedNetwork


@contextmanager
def _engine(device: torch.device) -> Iterator[None]:
    """What every engine entry runs under: no autograd graph, full float32 on CUDA."""
    with torch.no_grad(), ieee_float32(device):
        yield


class SwitchedView:
    """The model at one batch ``x`` (``[B, *input]``), as Theorem 1's switched network."""

    def __init__(self, session: SwitchedModel, net: SwitchedNetwork, x: torch.Tensor) -> None:
        self.session, self.net, self.input = session, net, x
        self._norms: dict[bool, dict[int, torch.Tensor]] = {}
        self._insens: torch.Tensor | None = None
        self._stability: tuple[torch.Tensor, list[tuple[str, int]]] | None = None
        self._neurons: NeuronState | None = None

    @property
    def chain(self) -> Chain:
        return self.net.chain

    @property
    def logits(self) -> torch.Tensor:
        """The model's outputs, ``[B, n_outputs]``."""
        return self.net.output

    @property
    def neurons(self) -> NeuronState:
        """Activities, active masks and active fractions of every hidden layer."""
        if self._neurons is None:
            chain = self.chain
            self._neurons = NeuronState({
                chain.links[i].name: LayerState(self.net.activity(i), self.net.activity(i) > 0)
                for i in chain.hidden_indices
            })
        return self._neurons

    def changes(self) -> dict[str, dict[str, torch.Tensor]]:
        """Neurons switched on and off from each sample to the next, ``{layer: {"on", "off": [B-1]}}``
        (the batch read as consecutive frames)."""
        return self.neurons[1:].changes_from(self.neurons[:-1])

    def squared_norms(self, all_neurons: bool = False) -> dict[int, torch.Tensor]:
        """‖ŵ_i‖² per hidden link, ``{link index: [B, *out_shape]}``: the inactive neurons'
        (all Insens needs), or every neuron's (what margins need; either serves Insens)."""
        every = all_neurons or True in self._norms
        if every not in self._norms:
            with _engine(self.input.device):
                memory = resolve_max_memory(self.session.max_memory, self.input.device)
                self._norms[every] = squared_norms(self.net, memory, all_neurons=every)
        return self._norms[every]

    def insens(self) -> torch.Tensor:
        """Insens (eq. 8) at each input, exactly; ``x``'s shape."""
        if self._insens is None:
            if not self.chain.hidden_indices:
                self._insens = torch.zeros_like(self.input)
            else:
                norms = self.squared_norms()
                with _engine(self.input.device):
                    self._insens = insens_from_norms(self.net, norms)
        return self._insens

    def stability(self) -> tuple[torch.Tensor, list[tuple[str, int]]]:
        """How far each input can move before the network's linear map changes: the margins
        ``[B]`` and, per sample, the nearest hidden neuron as ``(layer name, flat index)``."""
        if self._stability is None:
            norms = self.squared_norms(all_neurons=True)
            with _engine(self.input.device):
                self._stability = margins_from_norms(self.net, norms)
        return self._stability

    def projection(
        self, layer: str, neurons: torch.Tensor | list[int] | int | None = None, sample: int = 0
    ) -> SwitchedProjection:
        """The switched linear projection of ``neurons`` (flat indices or a boolean mask, all when None) of
        ``layer`` at input ``sample`` of the batch (Theorem 1, eqs. 2 and 6)."""
        if not -self.net.batch <= sample < self.net.batch:
            raise ValueError(f"sample {sample} is not in a batch of {self.net.batch}")
        sample %= self.net.batch
        with _engine(self.input.device):
            return project(self.net.rows(slice(sample, sample + 1)), self.input[sample], layer, neurons,
                           resolve_max_memory(self.session.max_memory, self.input.device))


class SwitchedModel:
    """A ReLU network read once as a chain; ``session(x)`` gives its :class:`SwitchedView` at ``x``.

    >>> session = SwitchedModel(agent.network)
    >>> view = session(frames)                     # one forward pass
    >>> view.logits, view.neurons.active_fraction, view.insens(), view.stability()

    The chain is read on the first batch of each input shape, dtype and device; a model whose
    layers are replaced afterwards needs a new session. The most recent view is kept, so that
    calling the session again on the very same, unmodified tensor costs nothing.
    ``max_memory`` bounds the working memory in bytes (default: 256 MiB on a CPU, 4 GiB on a GPU).
    """

    def __init__(self, model: nn.Module, max_memory: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
        if max_memory is not None:
            resolve_max_memory(max_memory, torch.device("cpu"))  # refuse a bad bound now
        self.model, self.max_memory = model, max_memory
        self._chains: dict[tuple, Chain] = {}
        self._lock = threading.Lock()
        self._last: tuple[torch.Tensor, int, SwitchedView] | None = None

    def chain(self, x: torch.Tensor, batched: bool = True) -> Chain:
        """The model's chain for inputs like ``x``, after checking both (the engine's gate)."""
        check_input(self.model, x, batched)
        shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
        key = (shape, x.dtype, x.device)
        chain = self._chains.get(key)
        if chain is None:
            with _engine(x.device):
                chain = read_chain(self.model, shape, x.device, x.dtype)
            with self._lock:
                chain = self._chains.setdefault(key, chain)
        return chain

    def __call__(self, x: torch.Tensor) -> SwitchedView:
        """The model at the batch ``x`` (``[B, *input]``): one forward pass."""
        last = self._last
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        chain = self.chain(x)
        with _engine(x.device):
            view = SwitchedView(self, SwitchedNetwork(chain, x.detach()), x.detach())
        self._last = (x, x._version, view)
        return view


def session_of(model: nn.Module | SwitchedModel, max_memory: int | None = None) -> SwitchedModel:
    """``model`` itself if it is a session, else a new one."""
    return model if isinstance(model, SwitchedModel) else SwitchedModel(model, max_memory)


# The free functions, each a one-call session.
def insens(model: nn.Module, x: torch.Tensor, max_memory: int | None = None) -> torch.Tensor:
    """Insens (eq. 8) of ``model`` at each input of the batch ``x``, exactly.

    Hidden neurons are the outputs of every Conv2d/Linear but the output layer; the inactive
    ones have activity v ≤ 0. Runs on the device and in the dtype (float32 or float64) of
    ``model`` and ``x``.

    Args:
        model: a chain of Conv2d, Linear, ReLU, MaxPool2d, ZeroPad2d, Flatten, Identity and
            eval-mode Dropout modules (anything else raises :class:`UnsupportedModelError`).
        x: a batch ``[B, *input shape]`` in the model's dtype and on its device.
        max_memory: bound on the working memory in bytes (default 256 MiB on a CPU, 4 GiB on
            a GPU); more lets more inputs go through at once.

    Returns:
        Insens at each input, ``x``'s shape and dtype.
    """
    return session_of(model, max_memory)(x).insens()


def stability_margin(
    model: nn.Module, x: torch.Tensor, max_memory: int | None = None
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """How far each input of the batch can move before the network's linear map changes.

    Args:
        model: a chain the engine accepts (see :func:`insens`).
        x: a batch ``[B, *input shape]``.
        max_memory: bound on the working memory in bytes.

    Returns:
        The margins ``[B]`` (the distance to the nearest switching hyperplane of a hidden
        neuron) and, per input, that neuron as ``(layer name, flat index)``.
    """
    return session_of(model, max_memory)(x).stability()


def neuron_state(model: nn.Module, x: torch.Tensor) -> NeuronState:
    """Activities and active masks of every hidden layer.

    Args:
        model: a chain the engine accepts (see :func:`insens`).
        x: a batch ``[B, *input shape]``.

    Returns:
        A :class:`~rl_insens.engine.NeuronState`: per hidden layer its activities and active
        mask, and the fraction of active hidden neurons of each input.
    """
    return session_of(model)(x).neurons


def switched_projection(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    neurons: torch.Tensor | list[int] | int | None = None,
    max_memory: int | None = None,
) -> SwitchedProjection:
    """The switched linear projection of neurons of ``layer`` at one input (Theorem 1).

    Args:
        model: a chain the engine accepts (see :func:`insens`).
        x: ONE input, without a batch dimension.
        layer: a Conv2d/Linear module's name in ``model.named_modules()``; the output layer is
            allowed (its projection is the network's exact local linear model).
        neurons: flat indices into that layer's output, or a boolean mask; all when None.
        max_memory: bound on the working memory in bytes.

    Returns:
        A :class:`~rl_insens.engine.SwitchedProjection`: each neuron's ŵ (``weight``, ``x``'s
        shape), b̂ (``bias``), activity v = x·ŵ + b̂ and centre ĉ.

    >>> p = switched_projection(net, x, "conv2", neurons=[0, 5])
    >>> torch.allclose((p.weight * x).flatten(1).sum(1) + p.bias, p.activity)
    True
    """
    session = session_of(model, max_memory)
    session.chain(x, batched=False)  # a single input's own checks and messages
    return session(x.unsqueeze(0)).projection(layer, neurons)


def decompose(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    neurons: torch.Tensor | list[int] | int | None = None,
) -> torch.Tensor:
    """Per-input-component contributions (x − ĉ)·ŵ to each neuron's activity (eq. 5).

    Args:
        model, x, layer, neurons: as for :func:`switched_projection`.

    Returns:
        ``[n, *x.shape]``: each chosen neuron's contributions, which sum to its activity v.
    """
    return switched_projection(model, x, layer, neurons).contributions


__all__ = ["SwitchedModel", "SwitchedView", "decompose", "insens", "neuron_state", "session_of",
           "stability_margin", "switched_projection"]
