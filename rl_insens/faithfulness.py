"""Does a map show what the network relies on? Measured, per attribution method.

* Noise where the map says it does not matter: Gaussian noise on the k% of inputs with the
  lowest |attribution|, versus the highest k% and a random k%; does the greedy action survive?
  (The Pong version of the paper's outline/frame test, section 4.1.) Also in closed loop: the
  agent plays whole stretches of Pong seeing the noisy frames, and we compare its return.
* Deletion and insertion curves (pixel flipping): inputs removed from, or inserted into, a
  blank frame in order of |attribution|; the chosen action's logit and probability along the
  way, and the area under each curve.
* Randomisation sanity check (Adebayo et al., 2018): maps of the trained network against maps
  of a copy whose top layers are re-initialised; a faithful method's maps should change (low
  rank correlation).

The work is split into independent tasks (one per method on the sampled frames, one per
closed-loop episode), run here, in a process pool or on Ray by ``parallel.run_unordered``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .attribution import attribute
from .files import atomic_path
from .parallel import run_unordered

FRACTION = 0.5
"""Default share of inputs that get noise."""
SIGMA = 0.3
"""Default standard deviation of that noise, for inputs in [0, 1]."""


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank of each element of each row (0 = smallest)."""
    return values.argsort(1).argsort(1).float()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair (ties broken by position)."""
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def noise_agreement(network: nn.Module, x: torch.Tensor, maps: torch.Tensor, fraction: float = FRACTION,
                    sigma: float = SIGMA, seed: int = 0, low: float = 0.0, high: float = 1.0) -> dict:
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
        noisy = with_noise(flat, chosen, noise, low, high).view_as(x)
        result[name] = float((network(noisy).argmax(1) == clean).float().mean())
    return result


def with_noise(flat: torch.Tensor, chosen: torch.Tensor, noise: torch.Tensor, low: float = 0.0,
               high: float = 1.0) -> torch.Tensor:
    """``flat`` (frames x inputs) with ``noise`` added at the ``chosen`` inputs of each row, clipped
    to the valid range so the frames stay frames the agent could see."""
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, chosen, True)
    return torch.where(mask, (flat + noise).clamp(low, high), flat)


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
    """A copy with its top ``layers`` conv/linear layers re-initialised (cascading randomisation).

    PyTorch's default initialisation, drawn from a generator of its own: the caller's random
    state is left alone.
    """
    generator = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(network)
    affine = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for module in affine[-layers:]:
            weight = torch.empty(module.weight.shape)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            module.weight.copy_(weight)
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                module.bias.copy_(torch.empty(module.bias.shape).uniform_(-bound, bound, generator=generator))
    return model


def randomisation_check(network: nn.Module, x: torch.Tensor, method: str, maps: torch.Tensor,
                        layers: int = 2) -> float:
    """Mean rank correlation of |maps| between the trained and the randomised network."""
    random_maps = attribute(randomised_copy(network, layers), x, method, target=network(x).argmax(1))
    return float(spearman(maps.abs(), random_maps.abs()).mean())


def measure_method(network: nn.Module, x: torch.Tensor, method: str, batch: int = 16,
                   fraction: float = FRACTION, sigma: float = SIGMA) -> dict:
    """All three measurements of one method on the frames ``x``."""
    target = network(x).argmax(1)
    maps = torch.cat([attribute(network, part, method, target=t)
                      for part, t in zip(x.split(batch), target.split(batch), strict=True)])
    few = min(len(x), 32)
    return {"noise_agreement": noise_agreement(network, x, maps, fraction, sigma),
            "curves": deletion_insertion(network, x, maps),
            "randomisation_spearman": randomisation_check(network, x[:few], method, maps[:few])}


# ----- closed loop ------------------------------------------------------------------------------
CHOICES = ("clean", "lowest", "highest", "random")
"""Closed-loop conditions: no noise, or noise on the least / most relevant or random inputs."""


@torch.no_grad()
def closed_loop(agent, method: str | None, choice: str, env_seed: int, fraction: float = FRACTION,
                sigma: float = SIGMA, max_steps: int = 1000) -> dict:
    """Play up to ``max_steps`` greedy steps of one episode, each frame noised as ``choice`` says
    (ranked by ``method``'s map of the clean frame); the return, and how often the action taken
    is the one the clean frame would have given."""
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; choose one of {', '.join(CHOICES)}")
    from .agents import make_pong_env

    network = agent.network
    generator = torch.Generator().manual_seed(env_seed)
    env = make_pong_env(**agent.env_settings)
    obs, _ = env.reset(seed=env_seed)
    score, length, agreed, done = 0.0, 0, 0, False
    try:
        while not done and length < max_steps:
            x = agent.preprocess(obs)
            clean_action = network(x).argmax(1)
            action = clean_action
            if choice != "clean":
                flat = x.flatten(1)
                k = int(round(fraction * flat.shape[1]))
                noise = torch.randn(flat.shape, generator=generator) * sigma
                if choice == "random":
                    chosen = torch.randperm(flat.shape[1], generator=generator)[None, :k]
                else:
                    with torch.enable_grad():
                        order = attribute(network, x, method, target=clean_action).flatten(1).abs().argsort(1)
                    chosen = order[:, :k] if choice == "lowest" else order[:, -k:]
                action = network(with_noise(flat, chosen, noise).view_as(x)).argmax(1)
            agreed += int(action == clean_action)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            score, length, done = score + float(reward), length + 1, terminated or truncated
    finally:
        env.close()
    return {"return": score, "length": length, "agreement": agreed / max(length, 1)}


# ----- tasks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodTask:
    """The frame measurements of one method."""

    agent: str
    method: str
    frames: torch.Tensor
    fraction: float = FRACTION
    sigma: float = SIGMA

    def run(self) -> dict:
        from .evaluate import one_thread, worker_agent

        with one_thread():
            return measure_method(worker_agent(self.agent).network, self.frames, self.method,
                                  fraction=self.fraction, sigma=self.sigma)


@dataclass(frozen=True)
class ClosedLoopTask:
    """One closed-loop episode of one condition (``method`` is None for clean and random)."""

    agent: str
    method: str | None
    choice: str
    env_seed: int
    fraction: float = FRACTION
    sigma: float = SIGMA
    max_steps: int = 1000

    def run(self) -> dict:
        from .evaluate import one_thread, worker_agent

        with one_thread():
            return closed_loop(worker_agent(self.agent), self.method, self.choice, self.env_seed,
                               self.fraction, self.sigma, self.max_steps)


def _run(task: MethodTask | ClosedLoopTask) -> dict:
    return task.run()


def run_faithfulness(agent_path: str, frames: torch.Tensor, methods, closed_loop_episodes: int = 0,
                     closed_loop_steps: int = 1000, seed: int = 0, fraction: float = FRACTION,
                     sigma: float = SIGMA, workers: int = 1, backend: str = "process",
                     address: str | None = None, progress: bool = True) -> dict:
    """Every measurement for every method, as independent tasks; returns the report."""
    from tqdm import tqdm

    tasks: list = [MethodTask(agent_path, m, frames, fraction, sigma) for m in methods]
    conditions = [(None, "clean"), (None, "random")]
    conditions += [(m, c) for m in methods for c in ("lowest", "highest")]
    tasks += [ClosedLoopTask(agent_path, m, c, seed * 100_003 + e, fraction, sigma, closed_loop_steps)
              for m, c in conditions for e in range(closed_loop_episodes)]
    methods_report: dict = {m: {} for m in methods}
    loops: dict = {}
    for index, result in tqdm(run_unordered(_run, tasks, workers, backend, address), total=len(tasks),
                              desc="tasks", disable=not progress):
        task = tasks[index]
        if isinstance(task, MethodTask):
            methods_report[task.method] = result
        else:
            loops.setdefault(condition_name(task.method, task.choice), {})[task.env_seed] = result
    closed = {}
    for name, episodes in loops.items():
        rows = [episodes[s] for s in sorted(episodes)]
        closed[name] = {"mean_return": float(np.mean([r["return"] for r in rows])),
                        "mean_agreement": float(np.mean([r["agreement"] for r in rows])), "episodes": rows}
    return {"methods": methods_report, "closed_loop": closed}


def condition_name(method: str | None, choice: str) -> str:
    """``clean``, ``random``, or e.g. ``insens/lowest``."""
    return choice if method is None else f"{method}/{choice}"


def markdown_table(methods: dict, closed_loop: dict | None = None, steps: int | None = None) -> str:
    """The per-method table, and the closed-loop one (episodes of at most ``steps``) if any."""
    lines = ["| method | action kept, noise on least relevant | on most relevant | on random | "
             "deletion AUC (prob) ↓ | insertion AUC (prob) ↑ | rank corr. with randomised net ↓ |",
             "|---|---|---|---|---|---|---|"]
    for method, r in methods.items():
        a, c = r["noise_agreement"], r["curves"]
        lines.append(f"| {method} | {a['lowest']:.1%} | {a['highest']:.1%} | {a['random']:.1%} | "
                     f"{c['auc_deletion_prob']:.3f} | {c['auc_insertion_prob']:.3f} | "
                     f"{r['randomisation_spearman']:.3f} |")
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
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
