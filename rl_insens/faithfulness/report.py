"""The faithfulness report as Markdown tables and figures."""

from __future__ import annotations

from .metrics import SUBSTRATES

SIMILARITIES = ("spearman", "ssim", "hog_pearson")


def _ci(pair) -> str:
    return f"{pair[0]:.3f}–{pair[1]:.3f}"


def markdown_table(methods: dict, closed_loop: dict | None = None, steps: int | None = None) -> str:
    """Every check's table, for the methods that have it (the random baseline included)."""
    lines: list[str] = []
    some = next(iter(methods.values()), {})
    if any("noise_agreement" in r for r in methods.values()):
        lines += ["| method | action kept, noise on least relevant | on most relevant | on random | "
                  "rank corr. with top-2-randomised net ↓ |", "|---|---|---|---|---|"]
        for method, r in methods.items():
            if "noise_agreement" in r:
                a = r["noise_agreement"]
                rand = f"{r['randomisation_spearman']:.3f}" if "randomisation_spearman" in r else "–"
                lines.append(f"| {method} | {a['lowest']:.1%} | {a['highest']:.1%} | {a['random']:.1%} "
                             f"| {rand} |")
    if "curves" in some:
        for base in SUBSTRATES:
            lines += ["", f"Deletion and insertion, {base} substrate (AUC of the chosen action's "
                      "probability and logit; mean over frames, 95% interval):", "",
                      "| method | deletion prob ↓ | insertion prob ↑ | deletion logit ↓ "
                      "| insertion logit ↑ |",
                      "|---|---|---|---|---|"]
            for method, r in methods.items():
                c = r["curves"][base]
                lines.append(f"| {method} | {c['auc_deletion_prob']:.3f} "
                             f"({_ci(c['auc_deletion_prob_ci95'])}) | {c['auc_insertion_prob']:.3f} "
                             f"({_ci(c['auc_insertion_prob_ci95'])}) | "
                             f"{c['auc_deletion_logit']:.2f} | {c['auc_insertion_logit']:.2f} |")
    cascading = {m: r["cascading"] for m, r in methods.items() if "cascading" in r}
    if cascading:
        layers = next(iter(cascading.values()))["layers"]
        lines += ["", "Cascading randomisation (layers re-initialised from the output down; similarity "
                  "of the maps to the trained network's, mean over frames; lower is better):", "",
                  "| method | similarity | " + " | ".join(f"+{name}" for name in layers) + " |",
                  "|---|---|" + "---|" * len(layers)]
        for method, c in cascading.items():
            for sim in SIMILARITIES:
                values = " | ".join(f"{s[sim]['mean']:.3f}" for s in c["steps"])
                lines.append(f"| {method} | {sim} | {values} |")
    objects = {m: r["objects"] for m, r in methods.items() if "objects" in r}
    if objects:
        names = list(next(iter(objects.values())))
        area = next(iter(objects.values()))["all objects"]["area"]
        lines += ["", f"Object saliency (share of |map| on the objects' boxes, which cover {area:.1%} of the "
                  "newest frame; pointing: the map's maximum on an object):", "",
                  "| method | mass on objects (95% interval) | pointing | "
                  + " | ".join(f"mass on {n}" for n in names if n != "all objects") + " |",
                  "|---|---|---|" + "---|" * (len(names) - 1)]
        for method, o in objects.items():
            per = " | ".join(f"{o[n]['mass']['mean']:.3f}" for n in names if n != "all objects")
            every = o["all objects"]
            lines.append(f"| {method} | {every['mass']['mean']:.3f} ({_ci(every['mass']['ci95'])}) | "
                         f"{every['pointing']:.1%} | {per} |")
    interventions = {m: r["interventions"] for m, r in methods.items() if "interventions" in r}
    if interventions:
        first = next(iter(interventions.values()))
        lines += ["", f"Interventions ({first['interventions']} objects moved in RAM, "
                  f"{first['dropped']} dropped as not moved on the screen): rank correlation between the "
                  "map's mass on the moved object and the change in the policy's logits", "",
                  "| method | Spearman ρ ↑ |", "|---|---|"]
        for method, i in interventions.items():
            lines.append(f"| {method} | {i['spearman_saliency_vs_logit_change']:+.3f} |")
    if closed_loop:
        n = len(closed_loop["clean"]["episodes"])
        length = f" of at most {steps} steps" if steps else ""
        lines += ["", f"Closed loop ({n} episode{'s' * (n > 1)}{length} per condition): the return, and "
                  "the share of steps whose action is the one the clean frame gives", "",
                  "| noise on | return | action kept |", "|---|---|---|"]
        labels = {"clean": "nothing (clean play)", "random": "random inputs"}
        for name, s in closed_loop.items():
            method, _, choice = name.partition("/")
            label = labels.get(name) or f"{'least' if choice == 'lowest' else 'most'} relevant by {method}"
            lines.append(f"| {label} | {s['mean_return']:+.1f} | {s['mean_agreement']:.1%} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(methods: dict, path) -> None:
    """Deletion and insertion curves (probability of the chosen action), one row per substrate."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(SUBSTRATES), 2, figsize=(11, 4 * len(SUBSTRATES)), squeeze=False)
    for row, base in enumerate(SUBSTRATES):
        for method, r in methods.items():
            if "curves" not in r:
                continue
            c = r["curves"][base]
            style = {"color": "grey", "linestyle": "--"} if method == "random" else {}
            axes[row, 0].plot(c["fractions"], c["deletion_prob"], label=method, **style)
            axes[row, 1].plot(c["fractions"], c["insertion_prob"], label=method, **style)
        axes[row, 0].set(title=f"deletion to {base} (most relevant first)",
                         xlabel="fraction of inputs removed", ylabel="probability of the chosen action")
        axes[row, 1].set(title=f"insertion into {base}", xlabel="fraction of inputs inserted")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cascading(methods: dict, path) -> None:
    """Adebayo et al.'s figure: each similarity against the layers randomised so far, per method."""
    plt = _pyplot()
    cascading = {m: r["cascading"] for m, r in methods.items() if "cascading" in r}
    if not cascading:
        return
    layers = next(iter(cascading.values()))["layers"]
    fig, axes = plt.subplots(1, len(SIMILARITIES), figsize=(5 * len(SIMILARITIES), 4), sharey=True)
    for ax, sim in zip(axes, SIMILARITIES, strict=True):
        for method, c in cascading.items():
            means = [s[sim]["mean"] for s in c["steps"]]
            spread = [s[sim]["std"] for s in c["steps"]]
            xs = range(1, len(layers) + 1)
            ax.errorbar(xs, means, yerr=spread, label=method, marker="o", capsize=3)
        ax.set_xticks(range(1, len(layers) + 1), [f"+{n}" for n in layers], rotation=45)
        ax.set(title=sim, xlabel="layers randomised (cumulative, from the output)", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the trained network's maps")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
