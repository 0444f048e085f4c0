"""Many recordings at once: one video and one run directory per episode, resumable.

Each episode is an independent task for :func:`rl_insens.parallel.run_unordered`, the split
that ``evaluate`` uses: in this process, in local worker processes or on a Ray cluster. A task
records its episode into a folder of its own on whichever machine runs it and hands the files
back; only this process writes them into the output folder, each atomically, the video last.
So every backend gives the same files in the same place, a cluster needs no shared disk, and
an episode whose video is there is finished: a resumed run skips it. Episode ``i`` resets with
seed ``seed + i``, as in :func:`rl_insens.record.record`, whoever plays it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from . import runs
from .evaluation.tasks import agent_digest
from .files import check_writable_dir, write_bytes, write_json
from .inspection import DEFAULT_METHODS, check_methods, resolve_device
from .parallel import check_backend, run_unordered
from .record import LAYOUTS, record
from .video import DEFAULT_CRF, check_video_settings
from .workers import one_thread, worker_agent

MANIFEST = "recording.json"
"""In the output folder: how its episodes were recorded, so that a resumed run adds alike ones."""


@dataclass(frozen=True)
class EpisodeTask:
    """One episode to record: everything that decides its files."""

    agent: str
    env: str | None
    episode: int
    seed: int
    max_steps: int | None
    methods: tuple[str, ...]
    every: int
    fps: int
    layout: str
    crf: int
    scale: float
    suffix: str
    batch: int = 16
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"episode_{self.episode:04d}"


def record_task(task: EpisodeTask) -> dict:
    """Record one episode into a scratch folder and return its files as bytes (relative paths)."""
    with one_thread(), tempfile.TemporaryDirectory(prefix="rl-insens-episode-") as scratch:
        agent = worker_agent(task.agent, task.env)
        result = record(agent, Path(scratch) / f"{task.name}{task.suffix}", max_steps=task.max_steps,
                        seed=task.seed, first_episode=task.episode, methods=task.methods, every=task.every,
                        fps=task.fps, device=task.device, layout=task.layout, batch=task.batch, crf=task.crf,
                        scale=task.scale, progress=False)
        paths = sorted(p for p in Path(scratch).rglob("*") if p.is_file())
        files = {str(p.relative_to(scratch)): p.read_bytes() for p in paths}
    complete = result.video is not None and not result.interrupted
    return {"episode": task.episode, "steps": result.steps, "complete": complete, "files": files}


def is_finished(folder: Path, task: EpisodeTask) -> bool:
    """Its video is there (written last) and its run directory says it is whole."""
    run_dir = folder / f"{task.name}.run"
    if not (folder / f"{task.name}{task.suffix}").exists():
        return False
    try:
        return bool(runs.read_meta(run_dir).get("complete"))
    except runs.RunError:
        return False


def save_episode(folder: Path, task: EpisodeTask, files: dict[str, bytes]) -> None:
    """Write one episode's files: its run directory (``run.json`` last), its contact sheet, then
    its video, each atomically; an earlier, unfinished attempt is replaced."""
    video = f"{task.name}{task.suffix}"
    shutil.rmtree(folder / f"{task.name}.run", ignore_errors=True)
    (folder / video).unlink(missing_ok=True)
    for relative in sorted(files, key=lambda name: (name == video, name.endswith(runs.META_FILE), name)):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, files[relative])


def _conditions(task: EpisodeTask, agent_path: str) -> dict:
    """What every episode of a folder must share (the episode number and the worker setup aside)."""
    settings = asdict(task)
    for key in ("episode", "batch", "device", "agent"):
        settings.pop(key)
    settings["methods"] = list(settings["methods"])
    settings["agent_sha256"] = agent_digest(agent_path)
    return settings


def _check_manifest(folder: Path, conditions: dict, resume: bool) -> None:
    path = folder / MANIFEST
    if not path.exists():
        if any(folder.glob("episode_*")):
            raise ValueError(f"{folder} holds episodes but no {MANIFEST}; choose another --out")
        return
    if not resume:
        raise FileExistsError(f"{folder} holds a recording: pass --resume to continue it, "
                              "or choose another --out")
    before = json.loads(path.read_text())["conditions"]
    differ = sorted(k for k in {**before, **conditions} if before.get(k) != conditions.get(k))
    if differ:
        raise ValueError(f"{folder} was recorded with other settings ({', '.join(differ)}); "
                         "resume with the same ones or choose another --out")


def record_episodes(
    agent_path: str | Path,
    folder: str | Path,
    episodes: int,
    env: str | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    methods=DEFAULT_METHODS,
    every: int = 1,
    fps: int = 30,
    layout: str = "methods",
    crf: int = DEFAULT_CRF,
    scale: float = 1.0,
    suffix: str = ".mp4",
    batch: int = 16,
    device: str = "cpu",
    workers: int = 1,
    backend: str = "process",
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Record ``episodes`` greedy episodes of the agent at ``agent_path`` into ``folder``, one
    ``episode_NNNN`` video (``suffix``), contact sheet and run directory each; the videos' paths.

    ``workers``/``backend``/``address`` choose where episodes run (see
    :func:`rl_insens.parallel.run_unordered`). ``resume`` continues a folder recorded with the
    same settings, skipping its finished episodes.
    """
    folder = Path(folder)
    check_backend(backend)
    if backend == "process":
        resolve_device(device)  # a device this machine lacks, refused before any work (Ray nodes may differ)
    methods = check_methods(methods)
    check_video_settings(folder / f"episode_0000{suffix}", crf, scale)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    if episodes < 1 or every < 1 or fps < 1 or batch < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError("episodes, every, fps, batch and max_steps must be positive")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    check_writable_dir(folder, "recordings")
    tasks = [EpisodeTask(str(agent_path), env, e, seed, max_steps, methods, every, fps, layout, crf, scale,
                         suffix, batch, device) for e in range(episodes)]
    conditions = {**_conditions(tasks[0], str(agent_path)),
                  "environment": worker_agent(str(agent_path), env).game.as_dict()}
    _check_manifest(folder, conditions, resume)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MANIFEST, {"conditions": conditions, "agent": str(agent_path), "env": env})
    todo = [t for t in tasks if not is_finished(folder, t)]
    with tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="episode", disable=not progress) as bar:
        for index, result in run_unordered(record_task, todo, workers, backend, address):
            if not result["complete"]:
                raise KeyboardInterrupt  # a worker was interrupted: its episode is not saved
            save_episode(folder, todo[index], result["files"])
            bar.update(1)
    return [folder / f"{t.name}{t.suffix}" for t in tasks]
