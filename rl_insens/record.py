"""Play episodes with an agent and record annotated side-by-side videos and a run directory.

Frames are played in chunks; each chunk's attribution maps are computed in one batch per
method, drawn, appended to the video and saved to the run directory, so an interrupted
recording keeps everything up to its last chunk. The video is written under a temporary
name and renamed once complete: Ctrl-C finishes it with the frames so far.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from . import render
from .agents import Agent, load_agent
from .wrapper import DEFAULT_METHODS, StepInspection, check_methods, inspect_frames, resolve_device

LAYOUTS = ("methods", "stack")
AGENT_FILE = "agent.pt"
"""The recorded agent's networks, so that a run directory can be inspected on its own."""
CONTACT_FRAMES = 6


@dataclass
class Recording:
    video: Path
    contact_sheet: Path
    run_dir: Path
    steps: int
    interrupted: bool


def _atomic_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class _Drawer:
    """Turns one step (screen, observation, inspection) into a video frame."""

    def __init__(self, methods: tuple[str, ...], layout: str, meanings: list[str], game: str) -> None:
        self.methods, self.layout, self.meanings, self.game = methods, layout, meanings, game
        self.scales = {m: render.SmoothScale() for m in methods}
        self.stack_method = "insens" if "insens" in methods else methods[0]

    def __call__(self, screen, observation, inspection: StepInspection, step: dict) -> np.ndarray:
        backdrop = render.dim(screen)
        if self.layout == "methods":
            title = f"{self.game}  episode {step['episode']}  step {step['t']}"
            panels = [render.panel(screen, None, None, title)]
            for method in self.methods:
                newest = inspection.maps[method][-1]  # the newest frame of the stack
                values = render.to_screen(newest, screen.shape)
                scale = self.scales[method].update(values)
                panels.append(render.panel(backdrop, values, scale, method))
        else:
            maps = inspection.maps[self.stack_method]
            scale = self.scales[self.stack_method].update(maps)
            panels = [render.panel(screen, None, None, f"step {step['t']}")]
            for k in range(len(observation)):
                gray = render.to_screen(observation[k], screen.shape)
                frame = render.dim(np.repeat(gray[..., None], 3, -1))
                panels.append(render.panel(frame, render.to_screen(maps[k], screen.shape), scale,
                                           f"frame t-{len(observation) - 1 - k}: {self.stack_method}"))
        action = inspection.action
        value = "n/a" if inspection.value is None else f"{inspection.value:+.2f}"
        lines = [
            f"step {step['t']}   action {self.meanings[action]} (p={inspection.action_probs[action]:.2f})   "
            f"value {value}   score {step['score']:+.0f}   active neurons {inspection.active_fraction:.1%}",
            "ms/frame: " + "  ".join(f"{m} {1e3 * s:.0f}" for m, s in inspection.seconds.items()),
        ]
        return render.side_by_side(panels, lines)


def record(
    agent: Agent | str | Path,
    out: str | Path,
    episodes: int = 1,
    max_steps: int | None = None,
    seed: int = 0,
    methods=DEFAULT_METHODS,
    every: int = 1,
    fps: int = 30,
    device: str = "auto",
    layout: str = "methods",
    batch: int = 16,
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> Recording:
    """Record ``episodes`` greedy episodes (each capped at ``max_steps``) to the MP4 ``out``.

    Beside it: ``out`` with ``.png`` (a contact sheet) and a run directory (``out`` without
    suffix, ``.run``) holding per-step data and attribution maps as compressed ``.npz``.
    """
    methods = check_methods(methods)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    if episodes < 1 or every < 1 or fps < 1 or batch < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError("episodes, every, fps, batch and max_steps must be positive")
    agent = load_agent(agent) if isinstance(agent, (str, Path)) else agent
    agent.to(resolve_device(device))
    out = Path(out)
    if out.suffix != ".mp4":
        raise ValueError(f"the video must be an .mp4 file, got {out}")
    run_dir = Path(run_dir) if run_dir else out.with_suffix(".run")
    env = agent.make_env(render_mode="rgb_array")

    out.parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "chunks").mkdir(parents=True, exist_ok=True)
    save_run_agent(agent, run_dir / AGENT_FILE)
    partial = out.with_name(out.stem + ".partial.mp4")
    writer = imageio.get_writer(partial, fps=fps, codec="libx264", quality=7, pixelformat="yuv420p",
                                macro_block_size=2, ffmpeg_log_level="error")
    draw = _Drawer(methods, layout, agent.action_meanings, agent.game.game)
    log: dict[str, list] = {k: [] for k in ("episode", "t", "action", "reward", "score", "logits", "probs",
                                            "value", "active_fraction", "fresh")}
    meta = {"agent": str((agent.card or {}).get("source", "")), "methods": list(methods), "layout": layout,
            "environment": agent.game.as_dict(), "seed": seed, "every": every,
            "action_meanings": agent.action_meanings, "video": out.name, "chunks": [], "complete": False}
    last_maps: dict[str, np.ndarray] = {}
    bar = tqdm(total=episodes * max_steps if max_steps else None, unit="step", disable=not progress)
    pending: list[dict] = []

    def flush() -> None:
        if not pending:
            return
        fresh = [(len(log["t"]) + i) % every == 0 for i in range(len(pending))]
        inspections = inspect_frames(agent, np.stack([p["obs"] for p in pending]), methods, fresh)
        maps = {m: [] for m in methods}
        for item, inspection, is_fresh in zip(pending, inspections, fresh, strict=True):
            if is_fresh:
                last_maps.update(inspection.maps)
            else:
                inspection.maps = dict(last_maps)
            for m in methods:
                maps[m].append(inspection.maps[m].astype(np.float16))
            writer.append_data(draw(item["screen"], item["obs"], inspection, item))
            for key, value in (("episode", item["episode"]), ("t", item["t"]), ("action", inspection.action),
                               ("reward", item["reward"]), ("score", item["score"]),
                               ("logits", inspection.logits), ("probs", inspection.action_probs),
                               ("value", np.nan if inspection.value is None else inspection.value),
                               ("active_fraction", inspection.active_fraction), ("fresh", is_fresh)):
                log[key].append(value)
        name = f"chunk_{len(meta['chunks']):05d}.npz"
        start = len(log["t"]) - len(pending)
        _atomic_npz(run_dir / "chunks" / name, steps=np.arange(start, len(log["t"])),
                    screens=np.stack([p["screen"] for p in pending]),
                    observations=np.stack([p["obs"] for p in pending]),
                    **{f"map_{m}": np.stack(v) for m, v in maps.items()})
        meta["chunks"].append(name)
        _atomic_npz(run_dir / "steps.npz", **{k: np.array(v) for k, v in log.items()})
        _atomic_json(run_dir / "run.json", {**meta, "steps": len(log["t"])})
        bar.update(len(pending))
        pending.clear()

    interrupted = False
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            score, t, done = 0.0, 0, False
            while not done and (max_steps is None or t < max_steps):
                screen = env.render()
                action = agent.act(obs)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                pending.append({"obs": obs, "screen": screen, "episode": episode, "t": t,
                                "reward": float(reward), "score": score})
                score, t, done, obs = score + float(reward), t + 1, terminated or truncated, next_obs
                if len(pending) == batch:
                    flush()
            flush()
    except KeyboardInterrupt:
        interrupted = True
        flush()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    finally:
        env.close()
        bar.close()
    writer.close()
    os.replace(partial, out)
    sheet = out.with_suffix(".png")
    write_contact_sheet(out, sheet, len(log["t"]))
    _atomic_json(run_dir / "run.json", {**meta, "steps": len(log["t"]), "complete": not interrupted})
    return Recording(out, sheet, run_dir, len(log["t"]), interrupted)


def save_run_agent(agent: Agent, path: Path) -> None:
    import copy

    import torch

    value = None if agent.value_network is None else copy.deepcopy(agent.value_network).cpu()
    tmp = path.with_suffix(".tmp")
    torch.save({"network": copy.deepcopy(agent.network).cpu(), "value_network": value, "kind": agent.kind,
                "action_meanings": agent.action_meanings, "scale": agent.scale, "card": agent.card}, tmp)
    os.replace(tmp, path)


def load_run_agent(path: Path) -> Agent:
    import torch

    data = torch.load(path, map_location="cpu", weights_only=False)  # written by save_run_agent
    return Agent(data["network"].eval(), data["action_meanings"], data["kind"], data["value_network"],
                 data["card"], data["scale"])


def write_contact_sheet(video: Path, png: Path, n_frames: int, n: int = CONTACT_FRAMES) -> None:
    """Evenly spaced frames of a video of ``n_frames`` frames, in a grid."""
    if n_frames == 0:
        return
    picks = set(np.linspace(0, n_frames - 1, min(n, n_frames)).round().astype(int).tolist())
    frames = [frame for i, frame in enumerate(iio.imiter(video)) if i in picks]
    sheet = render.contact_sheet(frames)
    tmp = png.with_name(png.stem + ".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    os.replace(tmp, png)
