"""The benchmarks' numbers over seeds, and their Markdown tables beside the paper's."""

from __future__ import annotations

import statistics

from ..intervals import confidence_interval
from .noise import VARIANTS


def mean_sd(values: list[float]) -> dict:
    """Mean, standard deviation and the half-width of the mean's 95% t interval over seeds."""
    low, high = confidence_interval(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci95": (high - low) / 2 if len(values) > 1 else float("nan"), "values": values}


def _interval(summary: dict) -> str:
    values = summary.get("values", [summary["mean"]])
    half = summary.get("ci95", float("nan"))
    spread = f" [{min(values):.1f}-{max(values):.1f}]" if len(values) > 1 else ""
    return f"{summary['mean']:.1f} ± {half:.1f}{spread}" if half == half else f"{summary['mean']:.1f}{spread}"


def _row(name: str, measured: dict, paper_accuracy, paper_active) -> str:
    acc, act = measured["accuracy"], measured["active_percent"]
    return f"| {name} | {_interval(acc)} | {paper_accuracy} | {_interval(act)} | {paper_active} |"


_HEADER = ["| test set | accuracy (ours) | accuracy (paper) | % active (ours) | % active (paper) |",
           "|---|---|---|---|---|"]


def mnist_markdown(report: dict) -> str:
    """The MNIST report as Markdown: accuracy and active neurons per test set, and the noise sweep."""
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


def cifar10_markdown(report: dict) -> str:
    """The CIFAR-10 report as a Markdown table beside the paper's numbers."""
    paper = report["paper"]
    return "\n".join([f"CIFAR-10, 2CONV ({paper['neurons']} hidden neurons, 24x24 centre crops), "
                      f"seeds {report['seeds']}", "", *_HEADER,
                      _row("CIFAR-10", report, paper["accuracy"], paper["active_percent"])]) + "\n"


def smallnorb_markdown(report: dict) -> str:
    """The smallNORB report as a Markdown table, a row per pixel encoding, beside the paper's numbers."""
    paper = report["paper"]
    rows = [_row(f"smallNORB {name}", measured, paper["accuracy"][name], paper["active_percent"][name])
            for name, measured in report["encodings"].items()]
    return "\n".join([f"smallNORB, 2CONV ({paper['neurons']} hidden neurons), one network per pixel "
                      f"encoding, seeds {report['seeds']}", "", *_HEADER, *rows]) + "\n"
