"""Training 2CONV as in Appendix B.1, and measuring it: accuracy and active neurons.

Adam, softmax cross-entropy, no regularisation, a validation split for early stopping,
Glorot-uniform initialisation (the paper's TensorFlow defaults). CIFAR-10 trains on random
24x24 crops with random contrast and is measured on the centre crops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..engine import neuron_state
from ..nets import TwoConv

CROP = 24
"""Side of the CIFAR-10 crops 2CONV sees (random to train, centred to test)."""
CONTRAST = (0.2, 1.8)
"""Range of TensorFlow's random_contrast factor used in the CIFAR-10 tutorial the paper followed."""


@dataclass
class TrainSettings:
    """How 2CONV is trained (Appendix B.1 leaves batch size and learning rate open)."""

    seed: int = 0
    epochs: int = 10
    """At most; training stops when validation accuracy has not improved for ``patience`` epochs."""
    min_epochs: int = 4
    """Epochs always run: one epoch's validation accuracy moves by a few images out of 5000."""
    patience: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    validation: int = 5000
    """Training images set aside (the last ones) to choose the epoch."""


def train_twoconv(images: torch.Tensor, labels: torch.Tensor, n_classes: int, settings: TrainSettings,
                  progress: bool = True,
                  augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                  evaluate_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  ) -> tuple[TwoConv, dict]:
    """Train with early stopping on the held-out tail of the training set; returns the best model.

    Args:
        images: the training images, float ``[N, C, H, W]``; the last ``settings.validation``
            are held out to choose the epoch.
        labels: their int64 labels.
        n_classes: the network's outputs.
        settings: how to train.
        progress: show a progress bar per epoch.
        augment: ``augment(batch, generator)`` transforms each training batch (CIFAR-10's
            random crops and contrast).
        evaluate_view: ``evaluate_view(images)`` is what validation sees instead (the centre
            crop); the network's input shape is its output's.

    Returns:
        The model of the best validation epoch, in eval mode, and a log of the validation
        accuracy per epoch, the epochs run and the best one.
    """
    torch.manual_seed(settings.seed)
    view = evaluate_view or (lambda x: x)
    model = TwoConv(tuple(view(images[:1]).shape[1:]), n_classes)
    train_x, train_y = images[: -settings.validation], labels[: -settings.validation]
    val_x, val_y = view(images[-settings.validation:]), labels[-settings.validation:]
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    best, best_state, history, waited = -1.0, None, [], 0
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        bar = tqdm(order.split(settings.batch_size), desc=f"seed {settings.seed} epoch {epoch + 1}",
                   disable=not progress, leave=False)
        for batch in bar:
            x = train_x[batch] if augment is None else augment(train_x[batch], generator)
            loss = nn.functional.cross_entropy(model(x), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        accuracy = evaluate_accuracy(model, val_x, val_y)
        history.append(accuracy)
        if accuracy > best:
            best, best_state, waited = accuracy, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            waited += 1
            if waited >= settings.patience and epoch + 1 >= settings.min_epochs:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"validation_accuracy": history, "epochs_run": len(history),
                   "best_epoch": int(np.argmax(history)) + 1}


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """% of the images ``x`` the model labels ``y``, ``batch`` images at a time."""
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch),
                                                                             strict=True))
    return 100.0 * correct / len(x)


@torch.no_grad()
def active_percent(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> float:
    """Average % of hidden neurons active per input (Table 3)."""
    fractions = torch.cat([neuron_state(model, xb).active_fraction for xb in x.split(batch)])
    return 100.0 * float(fractions.mean())


def centre_crop(images: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """The centred ``size`` x ``size`` window of each image: what CIFAR-10 is tested on."""
    top, left = (images.shape[2] - size) // 2, (images.shape[3] - size) // 2
    return images[:, :, top:top + size, left:left + size]


def cifar_augment(images: torch.Tensor, generator: torch.Generator, size: int = CROP) -> torch.Tensor:
    """A random crop per image, then its contrast scaled about each channel's mean."""
    n, _, h, w = images.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=generator)
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator)
    crops = torch.stack([image[:, top:top + size, left:left + size]
                         for image, top, left in zip(images, tops.tolist(), lefts.tolist(), strict=True)])
    factor = torch.empty(n, 1, 1, 1).uniform_(*CONTRAST, generator=generator)
    mean = crops.mean((2, 3), keepdim=True)
    return (crops - mean) * factor + mean
