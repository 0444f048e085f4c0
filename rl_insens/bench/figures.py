"""The benchmarks' figures: each method's maps of a trained 2CONV, input by input (Figures 4-6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..attribution import METHODS, attribute
from ..files import atomic_path


def figure(model: nn.Module, clean: torch.Tensor, variants: dict[str, torch.Tensor], path: Path) -> None:
    """Inputs x methods, red for positive and blue for negative, white at zero (Figures 4-6).

    Args:
        model: the trained network.
        clean: test images, one row each.
        variants: noisy versions of them by name, each a row per image below the clean ones.
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = torch.cat([clean, *variants.values()]) if variants else clean
    names = ["clean"] * len(clean) + [n for n, v in variants.items() for _ in range(len(v))]
    maps = {m: attribute(model, inputs, m) for m in METHODS}
    columns = ["input", *METHODS]
    fig, axes = plt.subplots(len(inputs), len(columns), figsize=(1.6 * len(columns), 1.6 * len(inputs)))
    for i in range(len(inputs)):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if column == "input":
                picture = inputs[i].permute(1, 2, 0).numpy().squeeze(-1) if inputs.shape[1] == 1 \
                    else inputs[i].permute(1, 2, 0).numpy()
                ax.imshow((picture - picture.min()) / max(np.ptp(picture), 1e-8), cmap="gray")
                ax.set_ylabel(names[i], fontsize=8)
            else:
                values = maps[column][i].sum(0).numpy()  # summed over colour channels
                scale = float(np.abs(values).max()) or 1.0
                ax.imshow(values, cmap="bwr", vmin=-scale, vmax=scale)
            if i == 0:
                ax.set_title(column.replace("_", " "), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
