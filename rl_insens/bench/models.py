"""The trained 2CONV models kept in a results folder, each beside a card of how it was trained.

A benchmark run again reuses a saved model whose card has the same settings, rather than
train it again; the card keeps the weights' sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_path, write_json
from ..nets import TwoConv
from .training import TrainSettings, train_twoconv


def sha256_state(model: nn.Module) -> str:
    """sha256 of the model's weights as ``torch.save`` writes them, for its card."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def trained_model(results: Path, name: str, images: torch.Tensor, labels: torch.Tensor, n_classes: int,
                  settings: TrainSettings, data_note: str, reuse: bool = True, progress: bool = True,
                  **training) -> tuple[TwoConv, dict]:
    """Train (or reuse a saved model with the same settings) and keep it with a small card.

    Args:
        results: the results folder; models go into its ``models/``.
        name: the benchmark's name; the files are ``<name>_seed<seed>.pt`` and ``.json``.
        images: the training images (see :func:`~rl_insens.bench.training.train_twoconv`).
        labels: their labels.
        n_classes: the network's outputs.
        settings: how to train; a saved model is reused only if its card has the same.
        data_note: what the data was, for the card.
        reuse: reuse a saved model where there is one; without it, train again.
        progress: show a progress bar while training.
        **training: passed on to ``train_twoconv`` (``augment``, ``evaluate_view``).

    Returns:
        The model, in eval mode, and its card.
    """
    folder = results / "models"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{name}_seed{settings.seed}"
    weights, card_path = stem.with_suffix(".pt"), stem.with_suffix(".json")
    if reuse and weights.exists() and card_path.exists():
        card = json.loads(card_path.read_text())
        if card.get("settings") == asdict(settings):
            model = TwoConv(tuple(card["input_shape"]), n_classes)
            model.load_state_dict(torch.load(weights, weights_only=True))
            return model.eval(), card
    model, log = train_twoconv(images, labels, n_classes, settings, progress, **training)
    with atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    card = {"data": data_note, "settings": asdict(settings), "input_shape": list(model.in_shape), **log,
            "sha256": sha256_state(model)}
    write_json(card_path, card)
    return model, card
