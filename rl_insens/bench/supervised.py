"""The supervised 2CONV benchmarks of section 4.1 and Appendix B.1, run seed by seed.

Each benchmark loads its data set, trains (or reuses) one model per seed, measures it, and
writes its report (JSON and a Markdown table) and a figure of the methods' maps into the
results folder; several seeds, since seeds move the noisy accuracies by several points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..files import check_writable_dir, write_json, write_text
from .figures import figure
from .models import trained_model
from .noise import VARIANTS, noisy_variants
from .tables import cifar10_markdown, mean_sd, mnist_markdown, smallnorb_markdown
from .training import TrainSettings, active_percent, centre_crop, cifar_augment, evaluate_accuracy

PAPER_MNIST = {
    "accuracy": {"clean": 99.4, "gauss": 31.7, "outline": 86.0, "frame": 44.9},
    "active_percent": {"clean": 17, "gauss": 25, "outline": 27, "frame": 23},
    "neurons": 38144,
}
"""The paper's MNIST numbers (section 4.1, Table 3), set beside ours in the report."""
PAPER_CIFAR10 = {"accuracy": 81.0, "active_percent": 19, "neurons": 28160}
PAPER_SMALLNORB = {"accuracy": {"norb": 84.3, "neg": 87.2, "mean": 81.4, "neg_mean": 83.6},
                   "active_percent": {"norb": 20, "neg": 15, "mean": 27, "neg_mean": 17}, "neurons": 442880}
"""The paper's numbers (Appendix B.1), set beside ours in the reports."""
SWEEP = ((0.5, False), (1.0, False), (2.0, False), (1.0, True))
"""The MNIST report's further noise settings, ``(sigma, clip)``."""
Loader = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""``load(data_dir, train=...)``: a data set's images and labels (see :mod:`.data`)."""


def mnist_benchmark(data_dir: str | Path | None, results: str | Path, seeds: Sequence[int] = (0, 1, 2),
                    sigma: float = 1.0, clip: bool = False, epochs: int = 10, reuse: bool = True,
                    progress: bool = True, sweep: Sequence[tuple[float, bool]] = SWEEP) -> dict:
    """Section 4.1 on MNIST: clean and noisy accuracies and Table 3's active neurons, per seed.

    Args:
        data_dir: the folder of MNIST's files; ``None`` for the cache (see :mod:`.data`).
        results: the folder for the report, the figure and the trained models.
        seeds: one trained network per seed.
        sigma: the noise's standard deviation.
        clip: clip the noisy images to [0, 1].
        epochs: training epochs at most (early stopping on validation).
        reuse: reuse a saved model trained with the same settings.
        progress: show progress bars.
        sweep: further ``(sigma, clip)`` noise settings whose accuracies the report lists.

    Returns:
        The report, also written to ``mnist.json`` and ``mnist.md`` in ``results``.
    """
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
        report[key] = {name: mean_sd([r[key][name] for r in per_seed]) for name in ("clean", *VARIANTS)}
    write_json(results / "mnist.json", report)
    write_text(results / "mnist.md", mnist_markdown(report))
    return report


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


def cifar10_benchmark(data_dir: str | Path | None, results: str | Path, seeds: Sequence[int] = (0, 1, 2),
                      epochs: int = 30, reuse: bool = True, progress: bool = True,
                      load: Loader | None = None) -> dict:
    """Appendix B.1 on CIFAR-10: random 24x24 crops with random contrast to train, centre crops to test.

    Args:
        data_dir: the folder of CIFAR-10's batches; ``None`` for the cache (see :mod:`.data`).
        results: the folder for the report, the figure and the trained models.
        seeds: one trained network per seed.
        epochs: training epochs at most (early stopping on validation).
        reuse: reuse a saved model trained with the same settings.
        progress: show progress bars.
        load: what reads the data set, by default :func:`~rl_insens.bench.data.load_cifar10`.

    Returns:
        The report, also written to ``cifar10.json`` and ``cifar10.md`` in ``results``.
    """
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
              "accuracy": mean_sd([r["accuracy"] for r in rows]),
              "active_percent": mean_sd([r["active_percent"] for r in rows])}
    write_json(results / "cifar10.json", report)
    write_text(results / "cifar10.md", cifar10_markdown(report))
    return report


def smallnorb_benchmark(data_dir: str | Path | None, results: str | Path, seeds: Sequence[int] = (0, 1, 2),
                        epochs: int = 20, reuse: bool = True, progress: bool = True,
                        load: Loader | None = None) -> dict:
    """Appendix B.1 on smallNORB, once per pixel encoding (0..1, negated, -1..1, negated -1..1).

    Args:
        data_dir: the folder of smallNORB's files; ``None`` for the cache (see :mod:`.data`).
        results: the folder for the reports, the figures and the trained models.
        seeds: one trained network per seed and encoding.
        epochs: training epochs at most (early stopping on validation).
        reuse: reuse a saved model trained with the same settings.
        progress: show progress bars.
        load: what reads the data set, by default :func:`~rl_insens.bench.data.load_smallnorb`.

    Returns:
        The report, also written to ``smallnorb.json`` and ``smallnorb.md`` in ``results``.
    """
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
                                         "accuracy": mean_sd([r["accuracy"] for r in rows]),
                                         "active_percent": mean_sd([r["active_percent"] for r in rows])}
    write_json(results / "smallnorb.json", report)
    write_text(results / "smallnorb.md", smallnorb_markdown(report))
    return report
