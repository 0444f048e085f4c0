"""Play episodes with an agent and record annotated side-by-side videos and a run directory.

Frames are played in chunks (:func:`rl_insens.inspection.inspect_play`); each chunk's
attribution maps are computed, drawn, and only then appended to the video and saved to the run
directory (see :mod:`rl_insens.runs`), so the video and the run data always hold the same
frames. Ctrl-C asks the recording to stop: the attribution work stops within a frame or two,
the frames done so far are finalised into a playable video, a contact sheet and a run
directory, and further Ctrl-Cs are ignored until those files are safe.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import render, rollout, runs
from .agents import Agent, load_agent
from .files import atomic_path, check_writable_dir, check_writable_file
from .inspection import DEFAULT_METHODS, InspectedStep, check_methods, inspect_play, resolve_device
from .video import DEFAULT_CRF, FrameSample, VideoWriter, check_video_settings

LAYOUTS = ("methods", "stack")
CONTACT_FRAMES = 6
LONG_CONTACT_FRAMES = 12
"""Frames on the contact sheet of a recording longer than ``LONG_RECORDING`` frames (two columns)."""
LONG_RECORDING = 600


@dataclass
class Recording:
    """What :func:`record` wrote: the video, its contact sheet and the run directory, how many frames
    they hold, and whether Ctrl-C cut the recording short."""

    video: Path | None
    """None when nothing was recorded (stopped before the first chunk was done)."""
    contact_sheet: Path | None
    run_dir: Path | None
    steps: int
    interrupted: bool


class StopOnInterrupt:
    """Turns Ctrl-C into a request to stop at the next safe point.

    The first SIGINT sets :attr:`requested`; later ones are ignored until the block ends, so
    that files being finalised are never cut short. Outside the main thread, where Python
    cannot catch signals, it does nothing and Ctrl-C raises ``KeyboardInterrupt`` as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> StopOnInterrupt:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        note = "still saving the files, wait a moment" if self.requested else \
            "stopping: saving the frames recorded so far (Ctrl-C again is ignored until they are safe)"
        self.requested = True
        print(f"\n{note}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class _NothingRecorded(Exception):
    """Stopped before the first chunk was done."""


def check_outputs(out: str | Path, run_dir: str | Path | None = None) -> tuple[Path, Path]:
    """The video path and run directory, checked before any work: a one-line ``ValueError``
    for a path that is not an ``.mp4`` or ``.gif``, is a directory, cannot be written, or a run
    directory that would overwrite something other than an earlier run."""
    out = Path(out)
    check_video_settings(out)
    check_writable_file(out, "video")
    run_dir = Path(run_dir) if run_dir else out.with_suffix(".run")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ValueError(f"the run directory {run_dir} exists and is not a directory")
        if any(run_dir.iterdir()) and not (run_dir / runs.META_FILE).exists():
            raise ValueError(f"{run_dir} exists and is not a run directory; "
                             "move it away or choose another --out")
    else:
        check_writable_dir(run_dir, "run directory")
    return out, run_dir


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
    crf: int = DEFAULT_CRF,
    scale: float = 1.0,
    first_episode: int = 0,
) -> Recording:
    """Record greedy episodes of ``agent`` to an annotated video and a run directory.

    Args:
        agent: an :class:`Agent`, or a path :func:`load_agent` reads.
        out: the video, an ``.mp4`` (x264) or a ``.gif``. Beside it go ``out`` with ``.png`` (a
            contact sheet spread over the whole recording) and the run directory.
        episodes: how many episodes; episode ``i`` resets with seed ``seed + i``.
        max_steps: cap on each episode's agent steps (None: play to the end).
        seed: the first episode's reset seed.
        methods: attribution methods drawn beside the game (see :func:`attribute`).
        every: compute the maps on every ``every``-th step only (the policy's outputs on all).
        fps: frames per second of the video.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the network and the engine.
        layout: ``methods`` (the newest frame under each method; one method is drawn full size
            beside the game) or ``stack`` (one method over each stacked frame).
        batch: frames attributed, drawn and saved together.
        run_dir: the run directory (default ``out`` without suffix, ``.run``; an earlier run
            there is replaced whole).
        progress: show a progress bar.
        crf: x264's constant rate factor (lower: larger and sharper).
        scale: resize factor of the video's frames.
        first_episode: number the episodes from there (one episode of many recorded on its
            own keeps its number and seed).

    Returns:
        A :class:`Recording`: the video, contact sheet and run directory written (None where
        nothing was recorded), the steps recorded, and whether a Ctrl-C cut it short.
    """
    methods = check_methods(methods)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    if episodes < 1 or every < 1 or fps < 1 or batch < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError("episodes, every, fps, batch and max_steps must be positive")
    check_video_settings(out, crf, scale)
    out, run_dir = check_outputs(out, run_dir)
    torch_device = resolve_device(device)
    agent = load_agent(agent) if isinstance(agent, (str, Path)) else agent
    agent.to(torch_device)
    env = agent.make_env(render_mode="rgb_array")

    meta = {"agent": str((agent.card or {}).get("source", "")), "methods": list(methods), "layout": layout,
            "environment": agent.game.as_dict(), "seed": seed, "every": every,
            "action_meanings": agent.action_meanings, "video": out.name,
            "crf": crf if out.suffix.lower() == ".mp4" else None, "scale": scale,
            "first_episode": first_episode}
    try:
        run = runs.RunWriter(run_dir, agent, meta)
    except BaseException:
        env.close()
        raise
    with StopOnInterrupt() as stop:
        try:
            with atomic_path(out) as partial:  # removed again if nothing was recorded
                writer = VideoWriter(partial, fps, crf, scale)
                draw = render.FrameDrawer(methods, layout, agent.action_meanings, agent.game.game)
                recorder = _Recorder(agent, methods, every, draw, writer, run, stop)
                try:
                    with tqdm(total=episodes * max_steps if max_steps else None, unit="step",
                              disable=not progress) as bar:
                        recorder.play(env, range(first_episode, first_episode + episodes), max_steps, seed,
                                      batch, bar)
                finally:
                    env.close()
                    stop.requested = True  # from here on Ctrl-C waits until the files are safe
                    writer.close()
                if not recorder.steps:
                    raise _NothingRecorded
        except _NothingRecorded:
            run.discard()
            return Recording(None, None, None, 0, recorder.interrupted)
        sheet = out.with_suffix(".png")
        write_contact_sheet(recorder.sample, sheet)
        run.finish(complete=not recorder.interrupted)
    return Recording(out, sheet, run_dir, recorder.steps, recorder.interrupted)


class _Recorder:
    """Draws each inspected chunk of play and appends it to the video and the run directory."""

    def __init__(self, agent: Agent, methods, every: int, draw: render.FrameDrawer, writer: VideoWriter,
                 run: runs.RunWriter, stop: StopOnInterrupt) -> None:
        self.agent, self.methods, self.every, self.draw = agent, methods, every, draw
        self.writer, self.run, self.stop = writer, run, stop
        self.sample = FrameSample(LONG_CONTACT_FRAMES)
        self.interrupted = False

    @property
    def steps(self) -> int:
        return self.run.steps

    def play(self, env, episodes, max_steps: int | None, seed: int, batch: int, bar) -> None:
        """Record the episodes (numbers; episode ``i`` resets with ``seed + i``); a Ctrl-C (or
        ``KeyboardInterrupt``) ends them at the last whole chunk, dropping frames not yet
        attributed, since stopping must be quick."""
        has_ram = getattr(env.unwrapped, "ale", None) is not None  # the console's RAM, where there is one
        steps = rollout.play(self.agent.act, env, seed, episodes, max_steps, screens=True, ram=has_ram)
        chunks = inspect_play(self.agent, steps, self.methods, batch, self.every,
                              should_stop=lambda: self.stop.requested)
        try:
            for chunk in chunks:
                self.append(chunk)
                bar.update(len(chunk))
        except KeyboardInterrupt:
            self.interrupted = True

    def append(self, chunk: list[InspectedStep]) -> None:
        """Draw the chunk's frames, then append them to every output together (an interruption
        while drawing leaves every output without the chunk)."""
        frames = [self.draw(found.step, found.inspection) for found in chunk]
        for frame in frames:
            self.writer.append(frame)
            self.sample.offer(frame)
        steps = [found.step for found in chunk]
        rows = [runs.step_row(s.episode, s.t, s.reward, s.score, found.inspection, found.fresh)
                for s, found in zip(steps, chunk, strict=True)]
        maps = {m: np.stack([found.inspection.maps[m] for found in chunk]) for m in self.methods}
        ram = np.stack([s.ram for s in steps]) if steps[0].ram is not None else None
        self.run.append(rows, np.stack([s.screen for s in steps]), np.stack([s.observation for s in steps]),
                        maps, ram)


def write_contact_sheet(sample: FrameSample, png: Path, columns: int | None = None) -> None:
    """Frames spread over the whole recording, in a grid: ``CONTACT_FRAMES`` in one column (or
    ``columns``), or for a recording of over ``LONG_RECORDING`` frames ``LONG_CONTACT_FRAMES`` in
    two (or twice ``columns``)."""
    long = sample.count > LONG_RECORDING
    sample.n = LONG_CONTACT_FRAMES if long else CONTACT_FRAMES
    frames = [frame for _, frame in sample.pick()]
    if not frames:
        return
    sheet = render.contact_sheet(frames, columns=(columns or 1) * (2 if long else 1), width=sample.width)
    with atomic_path(png) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
