"""A training run's episode log (``episodes.csv``): its learning curve and its wall time."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..files import atomic_path


def _episode_log(csv_path: Path, up_to_step: int | None = None) -> list[dict]:
    """The training run's episodes, those logged by ``up_to_step`` when given."""
    with open(csv_path) as f:
        return [row for row in csv.DictReader(f) if up_to_step is None or int(row["step"]) <= up_to_step]


def plot_learning_curve(csv_path: Path, png_path: Path, window: int = 20,
                        up_to_step: int | None = None, title: str = "RLNET, PPO training") -> None:
    """Episode returns against agent steps, with a moving mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _episode_log(csv_path, up_to_step)
    steps, returns = [int(r["step"]) for r in rows], [float(r["return"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, returns, ".", alpha=0.25, label="episode return")
    if len(returns) >= window:
        mean = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], mean, label=f"mean of {window}")
    ax.set(xlabel="agent steps", ylabel="return", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def training_wall_time(csv_path: Path, up_to_step: int | None = None) -> float:
    """Seconds between the first and last logged episode, summed over resumed segments."""
    times = [float(row["wall_time"]) for row in _episode_log(csv_path, up_to_step)]
    gaps = np.diff(times) if len(times) > 1 else np.array([])
    return float(gaps[gaps < 600].sum())  # a gap of over 10 minutes is a pause between sessions
