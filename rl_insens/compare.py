"""Several agents on the same states, in one video: one row per agent, one column per method.

The states (screens and the observations made from them) come from the first agent's greedy
play or from a run directory written by ``rl-insens record``; every agent is then asked about
exactly those observations, so the rows differ only by the agents. Each column shares one
colour scale over its rows (moving smoothly over time, as in ``record``), so a map that is
weaker in one agent looks weaker. This is how checkpoints of one training run, or different
agents of one game, are put side by side. Beside the video, a folder holds one run directory
per agent over those states, which ``rl-insens view`` opens like a recording.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import render, rollout, runs
from .agents import Agent, load_agent
from .envs import AtariSettings, game_name
from .files import atomic_path, check_writable_file, write_json
from .inspection import DEFAULT_METHODS, check_methods, inspect_frames, resolve_device
from .record import CONTACT_FRAMES, write_contact_sheet
from .video import DEFAULT_CRF, FrameSample, VideoWriter, check_video_settings

BATCH = 16
COMPARISON = "comparison.json"
"""In the folder beside the video: the rows' names and where the states came from."""
SHEET_WIDTH, SHEET_COLUMNS = 320, 3
"""The contact sheet's frames are tall (a row per agent): small, three to a row."""
OBSERVATION_SETTINGS = ("preprocessing", "frame_skip", "screen_size", "grayscale", "frame_stack")
"""What makes the observations of a game: agents compared on one set of states must agree on them."""


@dataclass
class States:
    """Consecutive moments of play: what the screen showed and what an agent observed."""

    screens: np.ndarray
    """``[n, 210, 160, 3]`` uint8."""
    observations: np.ndarray
    """``[n, *observation shape]`` as the environment gave them."""
    episodes: np.ndarray
    steps: np.ndarray
    rewards: np.ndarray
    scores: np.ndarray
    """The score before each step's reward, as ``record`` keeps it."""
    settings: AtariSettings
    source: str
    ram: np.ndarray | None = None
    """The console's RAM at each state, for ALE games."""


def states_from_play(agent: Agent, steps: int, seed: int = 0) -> States:
    """``steps`` states of ``agent``'s greedy play from ``reset(seed=seed)`` (the next episode,
    from ``seed + 1``, if one ends first)."""
    env = agent.make_env(render_mode="rgb_array")
    ale = getattr(env.unwrapped, "ale", None)
    columns: dict[str, list] = {k: [] for k in ("screens", "observations", "episodes", "steps", "rewards",
                                                "scores", "ram")}
    try:
        for step in rollout.play(agent.act, env, seed, episodes=None, screens=True, ram=ale is not None):
            for key, value in (("screens", step.screen), ("observations", step.observation),
                               ("episodes", step.episode), ("steps", step.t), ("rewards", step.reward),
                               ("scores", step.score), ("ram", step.ram)):
                columns[key].append(value)
            if len(columns["screens"]) == steps:
                break
    finally:
        env.close()
    ram = columns.pop("ram")
    return States(**{k: np.stack(v) for k, v in columns.items()}, settings=agent.game,
                  source=f"the greedy play of {agent.source} from seed {seed}",
                  ram=None if ale is None else np.stack(ram))


def states_from_run(run_dir: str | Path, steps: int | None = None) -> States:
    """The first ``steps`` (all when None) states of a run directory written by ``rl-insens record``."""
    run_dir = Path(run_dir)
    meta = runs.read_meta(run_dir)
    log = runs.read_npz(run_dir / runs.STEPS_FILE, ("episode", "t", "reward", "score"))
    chunks = []
    for name in meta["chunks"]:
        chunks.append(runs.read_npz(run_dir / runs.CHUNKS / name))
        if steps is not None and sum(len(c["screens"]) for c in chunks) >= steps:
            break
    if not chunks:
        raise runs.RunError(f"{run_dir} holds no frames")
    n = sum(len(c["screens"]) for c in chunks) if steps is None else steps
    ram = np.concatenate([c["ram"] for c in chunks])[:n] if all("ram" in c for c in chunks) else None
    return States(np.concatenate([c["screens"] for c in chunks])[:n],
                  np.concatenate([c["observations"] for c in chunks])[:n], log["episode"][:n], log["t"][:n],
                  log["reward"][:n], log["score"][:n], AtariSettings.from_dict(meta["environment"]),
                  str(run_dir), ram)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name).strip("_") or "agent"


def agent_names(paths: list[str | Path]) -> list[str]:
    """Short names for agent files or directories: the name without its suffix, with the folder
    above it where two would read the same (``resume`` checkpoints of two runs, say)."""
    stems = [Path(p).stem if Path(p).is_file() else Path(p).name for p in paths]
    return [f"{Path(p).parent.name}/{stem}" if stems.count(stem) > 1 else stem
            for p, stem in zip(paths, stems, strict=True)]


def check_same_observations(agents: list[Agent], names: list[str], states: States) -> None:
    """Refuse agents that would see other observations of these states than the ones recorded."""
    want = {k: getattr(states.settings, k) for k in OBSERVATION_SETTINGS}
    for agent, name in zip(agents, names, strict=True):
        shape = tuple(states.observations.shape[1:])
        if agent.observation_shape != shape:
            raise ValueError(f"{name} takes observations of shape {list(agent.observation_shape)}; "
                             f"the states from {states.source} have shape {list(shape)}")
        if agent.settings is None:
            continue  # no game said: it is taken to see what the states show
        if game_name(agent.game.env_id) != game_name(states.settings.env_id):
            raise ValueError(f"{name} plays {agent.game.game}; the states from {states.source} are of "
                             f"{game_name(states.settings.env_id)}")
        have = {k: getattr(agent.game, k) for k in OBSERVATION_SETTINGS}
        differ = sorted(k for k in want if want[k] != have[k])
        if differ:
            raise ValueError(f"{name} was trained on other observations of the game ({', '.join(differ)}: "
                             f"{', '.join(str(have[k]) for k in differ)}, where the states have "
                             f"{', '.join(str(want[k]) for k in differ)}); "
                             "compare agents of one preprocessing")


def compare(
    agents: list[Agent | str | Path],
    out: str | Path,
    states: States | None = None,
    env: str | None = None,
    steps: int = 300,
    seed: int = 0,
    methods=DEFAULT_METHODS,
    names: list[str] | None = None,
    fps: int = 30,
    crf: int = DEFAULT_CRF,
    scale: float = 1.0,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Write ``out`` (an ``.mp4`` or ``.gif``, with a ``.png`` contact sheet): the agents' maps of
    ``methods`` on the same states, one row per agent, captioned with ``names`` (by default the
    agents' file names) and their training steps. Without ``states`` they are ``steps`` states of
    the first agent's greedy play from ``seed``. ``env`` sets the game of agents given as paths.

    Beside the video, the folder ``out`` with ``.run`` holds a run directory per agent
    (``0_NAME``, ``1_NAME``, ...: its maps of the states), replacing an earlier comparison there.
    """
    methods = check_methods(methods)
    check_video_settings(out, crf, scale)
    out = check_writable_file(out, "video")
    folder = out.with_suffix(".run")
    ours = folder.is_dir() and ((folder / COMPARISON).exists() or not any(folder.iterdir()))
    if folder.exists() and not ours:
        raise ValueError(f"{folder} exists and is not a comparison's folder; "
                         "move it away or choose another --out")
    if not agents:
        raise ValueError("no agent to compare")
    if names is None:
        paths = [a if isinstance(a, (str, Path)) else a.source for a in agents]
        names = agent_names(paths)
    if len(names) != len(agents):
        raise ValueError(f"{len(names)} names for {len(agents)} agents")
    agents = [load_agent(a, env=env) if isinstance(a, (str, Path)) else a for a in agents]
    torch_device = resolve_device(device)
    if states is None:
        states = states_from_play(agents[0], steps, seed)
    check_same_observations(agents, names, states)
    for agent in agents:
        agent.to(torch_device)
    draw = render.RowsDrawer(names, agents, methods)
    sample = FrameSample(CONTACT_FRAMES, width=SHEET_WIDTH)
    n = len(states.observations)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(folder / COMPARISON, {"names": names, "states": states.source, "methods": list(methods),
                                     "video": out.name})
    rows = [runs.RunWriter(folder / f"{i}_{_slug(name)}", agent, _run_meta(agent, name, states, methods, out))
            for i, (agent, name) in enumerate(zip(agents, names, strict=True))]
    with atomic_path(out) as partial, VideoWriter(partial, fps, crf, scale) as writer, \
            tqdm(total=n * len(agents), unit="map set", disable=not progress) as bar:
        for start in range(0, n, BATCH):
            part = slice(start, start + BATCH)
            per_agent = []
            for agent, run in zip(agents, rows, strict=True):
                inspections = inspect_frames(agent, states.observations[part], methods)
                per_agent.append(inspections)
                _save_rows(run, states, part, inspections, methods)
                bar.update(len(inspections))
            for i in range(len(per_agent[0])):
                k = start + i
                frame = draw(states.screens[k], int(states.episodes[k]), int(states.steps[k]),
                             [inspections[i] for inspections in per_agent])
                writer.append(frame)
                sample.offer(frame)
    for run in rows:
        run.finish()
    write_contact_sheet(sample, out.with_suffix(".png"), columns=SHEET_COLUMNS)
    return out


def _run_meta(agent: Agent, name: str, states: States, methods: tuple[str, ...], out: Path) -> dict:
    return {"agent": agent.source, "name": name, "methods": list(methods), "layout": "methods",
            "environment": (agent.settings or states.settings).as_dict(), "states": states.source, "every": 1,
            "action_meanings": agent.action_meanings, "video": out.name}


def _save_rows(run: runs.RunWriter, states: States, part: slice, inspections, methods) -> None:
    where = zip(states.episodes[part], states.steps[part], states.rewards[part], states.scores[part],
                inspections, strict=True)
    run.append([runs.step_row(int(e), int(t), float(r), float(s), inspection)
                for e, t, r, s, inspection in where],
               states.screens[part], states.observations[part],
               {m: np.stack([i.maps[m] for i in inspections]) for m in methods},
               None if states.ram is None else states.ram[part])
