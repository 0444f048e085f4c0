"""Training and measuring 2CONV as in Appendix B.1, and the report of section 4.1's numbers.

Adam, softmax cross-entropy, no regularisation, a validation split for early stopping,
Glorot-uniform initialisation (the paper's TensorFlow defaults); several seeds, since seeds
move the noisy accuracies by several points.
"""

from __future__ import annotations

import hashlib
import io
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..attribution import METHODS, attribute
from ..engine import neuron_state
from ..files import atomic_path, check_writable_dir, write_json, write_text
from ..intervals import confidence_interval
from ..nets import TwoConv
from .noise import VARIANTS, noisy_variants

PAPER_MNIST = {
    "accuracy": {"clean": 99.4, "gauss": 31.7, "outline": 86.0, "frame": 44.9},
    "active_percent": {"clean": 17, "gauss": 25, "outline": 27, "frame": 23},
    "neurons": 38144,
}


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
                  progress: bool = True, augment=None, evaluate_view=None) -> tuple[TwoConv, dict]:
    """Train with early stopping on the held-out tail of the training set; returns the best model.

    ``augment(batch, generator)`` transforms each training batch (CIFAR-10's random crops and
    contrast); ``evaluate_view(images)`` is what validation sees instead (the centre crop).
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
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch),
                                                                             strict=True))
    return 100.0 * correct / len(x)


@torch.no_grad()
def active_percent(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> float:
    """Average % of hidden neurons active per input (Table 3)."""
    fractions = torch.cat([neuron_state(model, xb).active_fraction for xb in x.split(batch)])
    return 100.0 * float(fractions.mean())


def sha256_state(model: nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def trained_model(results: Path, name: str, images, labels, n_classes: int, settings: TrainSettings,
                  data_note: str, reuse: bool = True, progress: bool = True,
                  **training) -> tuple[TwoConv, dict]:
    """Train (or reuse a saved model with the same settings) and keep it with a small card."""
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


def mnist_benchmark(data_dir: str | Path | None, results: str | Path, seeds=(0, 1, 2), sigma: float = 1.0,
                    clip: bool = False, epochs: int = 10, reuse: bool = True, progress: bool = True,
                    sweep=((0.5, False), (1.0, False), (2.0, False), (1.0, True))) -> dict:
    """Section 4.1 on MNIST: clean and noisy accuracies and Table 3's active neurons, per seed."""
    from .data import load_mnist

    results = Path(results)
    check_writable_dir(results, "results")  # created once there is something to put in it
    train_x, train_y = load_mnist(data_dir, train=True)
    test_x, test_y = load_mnist(data_dir, train=False)
    variants = noisy_variants(test_x, sigma=sigma, clip=clip, seed=1234)
    per_seed = []
    for seed in seeds:
        settings = TrainSettings(seed=seed, epochs=epochs)
        note = "MNIST, 55000 train / 5000 validation (last) / 10000 test"
        model, card = trained_model(results, "mnist", train_x, train_y, 10, settings, note, reuse, progress)
        row = {"seed": seed, "epochs_run": card["epochs_run"],
               "accuracy": {"clean": evaluate_accuracy(model, test_x, test_y)},
               "active_percent": {"clean": active_percent(model, test_x)}}
        for name, x in variants.items():
            row["accuracy"][name] = evaluate_accuracy(model, x, test_y)
            row["active_percent"][name] = active_percent(model, x)
        row["sweep"] = {f"sigma={s},clip={c}": {n: evaluate_accuracy(model, x, test_y) for n, x in
                                                 noisy_variants(test_x, sigma=s, clip=c, seed=1234).items()}
                        for s, c in sweep}
        per_seed.append(row)
        if seed == seeds[0]:
            figure(model, test_x[:3], {n: v[:3] for n, v in variants.items()}, results / "mnist_methods.png")
    report = {"benchmark": "mnist", "noise": {"sigma": sigma, "clip": clip}, "seeds": list(seeds),
              "per_seed": per_seed, "paper": PAPER_MNIST, "neurons": 38144}
    for key in ("accuracy", "active_percent"):
        report[key] = {name: _mean_sd([r[key][name] for r in per_seed]) for name in ("clean", *VARIANTS)}
    write_json(results / "mnist.json", report)
    write_text(results / "mnist.md", mnist_markdown(report))
    return report


def _mean_sd(values: list[float]) -> dict:
    """Mean, standard deviation and the half-width of the mean's 95% t interval over seeds."""
    low, high = confidence_interval(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci95": (high - low) / 2 if len(values) > 1 else float("nan"), "values": values}


def mnist_markdown(report: dict) -> str:
    paper = report["paper"]
    lines = [f"MNIST, 2CONV ({report['neurons']} hidden neurons), seeds {report['seeds']}, "
             f"noise N(0, {report['noise']['sigma']}){' clipped' if report['noise']['clip'] else ''}; "
             "ours: mean ± half-width of its 95% t interval over the seeds [min-max]",
             "", "| test set | accuracy (ours) | accuracy (paper) | % active (ours) | % active (paper) |",
             "|---|---|---|---|---|"]
    for name in ("clean", *VARIANTS):
        acc, act = report["accuracy"][name], report["active_percent"][name]
        lines.append(f"| {name} | {_interval(acc)} | {paper['accuracy'][name]} | "
                     f"{_interval(act)} | {paper['active_percent'][name]} |")
    lines += ["", "Noise sweep (accuracy %, mean over seeds):", "",
              "| noise | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for setting in report["per_seed"][0]["sweep"]:
        means = [statistics.fmean(r["sweep"][setting][v] for r in report["per_seed"]) for v in VARIANTS]
        lines.append(f"| {setting} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


def _interval(summary: dict) -> str:
    values = summary.get("values", [summary["mean"]])
    half = summary.get("ci95", float("nan"))
    spread = f" [{min(values):.1f}-{max(values):.1f}]" if len(values) > 1 else ""
    return f"{summary['mean']:.1f} ± {half:.1f}{spread}" if half == half else f"{summary['mean']:.1f}{spread}"


def figure(model: nn.Module, clean: torch.Tensor, variants: dict[str, torch.Tensor], path: Path) -> None:
    """Inputs x methods, red for positive and blue for negative, white at zero (Figures 4-6)."""
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


# ----- CIFAR-10 and smallNORB ------------------------------------------------------------------------
PAPER_CIFAR10 = {"accuracy": 81.0, "active_percent": 19, "neurons": 28160}
PAPER_SMALLNORB = {"accuracy": {"norb": 84.3, "neg": 87.2, "mean": 81.4, "neg_mean": 83.6},
                   "active_percent": {"norb": 20, "neg": 15, "mean": 27, "neg_mean": 17}, "neurons": 442880}
CROP = 24
CONTRAST = (0.2, 1.8)
"""Range of TensorFlow's random_contrast factor used in the CIFAR-10 tutorial the paper followed."""


def centre_crop(images: torch.Tensor, size: int = CROP) -> torch.Tensor:
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


def _seed_rows(results, name, seeds, train, test, n_classes, epochs, reuse, progress, note, **training):
    rows = []
    view = training.get("evaluate_view") or (lambda x: x)
    for seed in seeds:
        model, card = trained_model(results, name, *train, n_classes, TrainSettings(seed=seed, epochs=epochs),
                                    note, reuse, progress, **training)
        test_x = view(test[0])
        rows.append({"seed": seed, "epochs_run": card["epochs_run"],
                     "accuracy": evaluate_accuracy(model, test_x, test[1]),
                     "active_percent": active_percent(model, test_x)})
    return rows, model


def cifar10_benchmark(data_dir, results, seeds=(0, 1, 2), epochs: int = 30, reuse: bool = True,
                      progress: bool = True, load=None) -> dict:
    """Appendix B.1 on CIFAR-10: random 24x24 crops with random contrast to train, centre crops to test."""
    from .data import load_cifar10

    load = load or load_cifar10
    results = Path(results)
    check_writable_dir(results, "results")  # created once there is something to put in it
    train, test = load(data_dir, train=True), load(data_dir, train=False)
    rows, model = _seed_rows(results, "cifar10", seeds, train, test, 10, epochs, reuse, progress,
                             "CIFAR-10, 45000 train / 5000 validation (last) / 10000 test",
                             augment=cifar_augment, evaluate_view=centre_crop)
    figure(model, centre_crop(test[0][:4]), {}, results / "cifar10_methods.png")
    report = {"benchmark": "cifar10", "seeds": list(seeds), "per_seed": rows, "paper": PAPER_CIFAR10,
              "accuracy": _mean_sd([r["accuracy"] for r in rows]),
              "active_percent": _mean_sd([r["active_percent"] for r in rows])}
    write_json(results / "cifar10.json", report)
    write_text(results / "cifar10.md", cifar10_markdown(report))
    return report


def smallnorb_benchmark(data_dir, results, seeds=(0, 1, 2), epochs: int = 20, reuse: bool = True,
                        progress: bool = True, load=None) -> dict:
    """Appendix B.1 on smallNORB, once per pixel encoding (0..1, negated, -1..1, negated -1..1)."""
    from .data import SMALLNORB_ENCODINGS, load_smallnorb

    load = load or load_smallnorb
    results = Path(results)
    check_writable_dir(results, "results")  # created once there is something to put in it
    (train_x, train_y), (test_x, test_y) = load(data_dir, train=True), load(data_dir, train=False)
    # The files list images instance by instance: shuffle once so validation is not one toy.
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
    train_x, train_y = train_x[order], train_y[order]
    report = {"benchmark": "smallnorb", "seeds": list(seeds), "paper": PAPER_SMALLNORB, "encodings": {}}
    for encoding, encode in SMALLNORB_ENCODINGS.items():
        rows, model = _seed_rows(results, f"smallnorb_{encoding}", seeds, (encode(train_x), train_y),
                                 (encode(test_x), test_y), 5, epochs, reuse, progress,
                                 f"smallNORB ({encoding} encoding), first camera, 5000 validation images")
        figure(model, encode(test_x[:2]), {}, results / f"smallnorb_{encoding}_methods.png")
        report["encodings"][encoding] = {"per_seed": rows,
                                         "accuracy": _mean_sd([r["accuracy"] for r in rows]),
                                         "active_percent": _mean_sd([r["active_percent"] for r in rows])}
    write_json(results / "smallnorb.json", report)
    write_text(results / "smallnorb.md", smallnorb_markdown(report))
    return report


def _row(name: str, measured: dict, paper_accuracy, paper_active) -> str:
    acc, act = measured["accuracy"], measured["active_percent"]
    return f"| {name} | {_interval(acc)} | {paper_accuracy} | {_interval(act)} | {paper_active} |"


_HEADER = ["| test set | accuracy (ours) | accuracy (paper) | % active (ours) | % active (paper) |",
           "|---|---|---|---|---|"]


def cifar10_markdown(report: dict) -> str:
    paper = report["paper"]
    return "\n".join([f"CIFAR-10, 2CONV ({paper['neurons']} hidden neurons, 24x24 centre crops), "
                      f"seeds {report['seeds']}", "", *_HEADER,
                      _row("CIFAR-10", report, paper["accuracy"], paper["active_percent"])]) + "\n"


def smallnorb_markdown(report: dict) -> str:
    paper = report["paper"]
    rows = [_row(f"smallNORB {name}", measured, paper["accuracy"][name], paper["active_percent"][name])
            for name, measured in report["encodings"].items()]
    return "\n".join([f"smallNORB, 2CONV ({paper['neurons']} hidden neurons), one network per pixel "
                      f"encoding, seeds {report['seeds']}", "", *_HEADER, *rows]) + "\n"
