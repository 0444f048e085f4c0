"""Does a map show what the network relies on? Measured, per attribution method.

* Noise where the map says it does not matter: Gaussian noise on the k% of inputs with the
  lowest |attribution|, versus the highest k% and a random k%; does the greedy action survive?
  (The Pong version of the paper's outline/frame test, section 4.1.)
* Deletion and insertion curves (pixel flipping): inputs removed from, or inserted into, a
  blank frame in order of |attribution|; the chosen action's logit and probability along the
  way, and the area under each curve.
* Randomisation sanity check (Adebayo et al., 2018): maps of the trained network against maps
  of a copy whose top layers are re-initialised; a faithful method's maps should change (low
  rank correlation).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .attribution import attribute


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank of each element of each row (0 = smallest)."""
    return values.argsort(1).argsort(1).float()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair (ties broken by position)."""
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def noise_agreement(network: nn.Module, x: torch.Tensor, maps: torch.Tensor, fraction: float = 0.5,
                    sigma: float = 0.3, seed: int = 0, low: float = 0.0, high: float = 1.0) -> dict:
    """Share of frames whose greedy action survives noise on the least / most / randomly chosen
    ``fraction`` of inputs, ranked by |attribution|."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    flat = x.flatten(1)
    k = int(round(fraction * flat.shape[1]))
    order = maps.flatten(1).abs().argsort(1)  # ascending |attribution|
    random_order = torch.rand(flat.shape, generator=generator).argsort(1).to(x.device)
    noise = torch.randn(flat.shape, generator=generator).to(x.device) * sigma
    clean = network(x).argmax(1)
    result = {}
    choices = {"lowest": order[:, :k], "highest": order[:, -k:], "random": random_order[:, :k]}
    for name, chosen in choices.items():
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, chosen, True)
        noisy = torch.where(mask, (flat + noise).clamp(low, high), flat).view_as(x)
        result[name] = float((network(noisy).argmax(1) == clean).float().mean())
    return result


@torch.no_grad()
def deletion_insertion(network: nn.Module, x: torch.Tensor, maps: torch.Tensor, steps: int = 20,
                       baseline: float = 0.0, batch: int = 64) -> dict:
    """Curves of the chosen action's probability and logit as inputs are deleted (set to
    ``baseline``) or inserted (into an all-``baseline`` frame), most relevant first."""
    flat = x.flatten(1)
    n, d = flat.shape
    order = maps.flatten(1).abs().argsort(1, descending=True)
    target = network(x).argmax(1)
    fractions = np.linspace(0, 1, steps + 1)
    curves = {f"{kind}_{what}": np.zeros((steps + 1, n)) for kind in ("deletion", "insertion")
              for what in ("prob", "logit")}
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=x.device).expand(n, d))
    for s, fraction in enumerate(fractions):
        top = rank < int(round(fraction * d))  # the most relevant ``fraction`` of inputs
        for kind, frames in (("deletion", torch.where(top, baseline, flat)),
                             ("insertion", torch.where(top, flat, baseline))):
            logits = torch.cat([network(part.view(-1, *x.shape[1:])) for part in frames.split(batch)])
            chosen = logits.gather(1, target[:, None])[:, 0]
            curves[f"{kind}_prob"][s] = logits.softmax(1).gather(1, target[:, None])[:, 0].cpu().numpy()
            curves[f"{kind}_logit"][s] = chosen.cpu().numpy()
    mean = {k: v.mean(1) for k, v in curves.items()}
    area = {f"auc_{k}": float(np.trapezoid(v, fractions)) for k, v in mean.items()}
    return {"fractions": fractions.tolist(), **{k: v.tolist() for k, v in mean.items()}, **area}


def randomised_copy(network: nn.Module, layers: int = 2, seed: int = 0) -> nn.Module:
    """A copy with its top ``layers`` conv/linear layers re-initialised (cascading randomisation)."""
    torch.manual_seed(seed)
    model = copy.deepcopy(network)
    affine = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module in affine[-layers:]:
        module.reset_parameters()
    return model


def randomisation_check(network: nn.Module, x: torch.Tensor, method: str, maps: torch.Tensor,
                        layers: int = 2) -> float:
    """Mean rank correlation of |maps| between the trained and the randomised network."""
    random_maps = attribute(randomised_copy(network, layers), x, method, target=network(x).argmax(1))
    return float(spearman(maps.abs(), random_maps.abs()).mean())


def evaluate_methods(network: nn.Module, x: torch.Tensor, methods, batch: int = 16, progress: bool = True,
                     fraction: float = 0.5, sigma: float = 0.3) -> dict:
    """All three measurements for each method on the frames ``x``."""
    from tqdm import tqdm

    report = {}
    for method in tqdm(methods, desc="methods", disable=not progress):
        target = network(x).argmax(1)
        maps = torch.cat([attribute(network, part, method, target=t)
                          for part, t in zip(x.split(batch), target.split(batch), strict=True)])
        report[method] = {
            "noise_agreement": noise_agreement(network, x, maps, fraction, sigma),
            "curves": deletion_insertion(network, x, maps),
            "randomisation_spearman": randomisation_check(network, x[: min(len(x), 32)], method,
                                                          maps[: min(len(x), 32)]),
        }
    return report


def markdown_table(report: dict) -> str:
    lines = ["| method | action kept, noise on least relevant | on most relevant | on random | "
             "deletion AUC (prob) ↓ | insertion AUC (prob) ↑ | rank corr. with randomised net ↓ |",
             "|---|---|---|---|---|---|---|"]
    for method, r in report.items():
        a, c = r["noise_agreement"], r["curves"]
        lines.append(f"| {method} | {a['lowest']:.1%} | {a['highest']:.1%} | {a['random']:.1%} | "
                     f"{c['auc_deletion_prob']:.3f} | {c['auc_insertion_prob']:.3f} | "
                     f"{r['randomisation_spearman']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, r in report.items():
        c = r["curves"]
        axes[0].plot(c["fractions"], c["deletion_prob"], label=method)
        axes[1].plot(c["fractions"], c["insertion_prob"], label=method)
    axes[0].set(title="deletion (most relevant first)", xlabel="fraction of inputs removed",
                ylabel="probability of the chosen action")
    axes[1].set(title="insertion (most relevant first)", xlabel="fraction of inputs inserted")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_frames(agent, n: int, seed: int = 0, every: int = 5, progress: bool = True) -> torch.Tensor:
    """``n`` observations from the agent's own greedy play, every ``every``-th step."""
    from tqdm import tqdm

    from .agents import make_pong_env

    env = make_pong_env(**agent.env_settings)
    frames, episode = [], 0
    bar = tqdm(total=n, desc="frames", disable=not progress)
    try:
        while len(frames) < n:
            obs, _ = env.reset(seed=seed + episode)
            done, t = False, 0
            while not done and len(frames) < n:
                if t % every == 0:
                    frames.append(agent.preprocess(obs)[0])
                    bar.update(1)
                obs, _, terminated, truncated, _ = env.step(agent.act(obs))
                done, t = terminated or truncated, t + 1
            episode += 1
    finally:
        env.close()
        bar.close()
    return torch.stack(frames)
