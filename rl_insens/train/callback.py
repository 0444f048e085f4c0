"""Watch a policy learn: an SB3 callback that records and measures the policy every N steps.

At each point it copies the policy as it is, plays it greedily for a few steps on fixed seeds
in the game, and records the clip with :func:`rl_insens.record.record` (the same renderer as
``rl-insens record``), named by the step count. The clip's numbers
(:func:`rl_insens.clipstats.clip_statistics`) go to SB3's logger under ``insens/``, so they land
in TensorBoard, CSV or JSON as the run is set up, and to ``inspections.jsonl`` beside the clips.
With TensorBoard on, the clip itself is logged as a video where ``tensorboard`` and
``moviepy<2`` (what PyTorch's video summary needs) are installed; otherwise it says so once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat, Video

from ..agents.sb3 import from_policy
from ..clipstats import clip_statistics
from ..envs import AtariSettings, check_env_id
from ..inspection import check_methods
from ..record import record
from ..video import DEFAULT_CRF, check_video_settings

PREFIX = "insens/"
LOG_FILE = "inspections.jsonl"
TENSORBOARD_WIDTH = 640
"""Frames logged to TensorBoard are shrunk to this width (its videos are GIFs in the event file)."""
NO_VIDEO = ("InsensCallback: the clips are not logged to TensorBoard as videos, which needs tensorboard "
            "and moviepy<2 (pip install 'rl-insens[tensorboard]'); they are in {}")


def tensorboard_video_missing() -> str | None:
    """What stops a video from reaching TensorBoard here, or None."""
    if importlib.util.find_spec("tensorboard") is None:
        return "tensorboard is not installed"
    try:
        import moviepy.editor  # noqa: F401  (what torch's add_video imports; moviepy 2 dropped it)
    except ImportError:
        return "moviepy<2 is not installed"
    return None


class InsensCallback(BaseCallback):
    """Every ``every`` agent steps: a clip of ``steps`` greedy steps per episode of the policy
    in training, from reset seeds ``seed``, ``seed + 1``, ... (``episodes`` of them), with the
    maps of ``methods``, written to ``out_dir/step_<N>.mp4`` (and its ``.png`` contact sheet
    and ``.run`` directory); its numbers logged under ``insens/``.

    >>> model.learn(100_000, callback=ri.InsensCallback("PongNoFrameskip-v4", every=10_000))

    ``env``: the game to play, an id (the policy's observations must match its preprocessing:
    ``preprocessing="sb3"`` by default, as ``make_atari_env`` + ``VecFrameStack(4)`` give) or
    whole :class:`~rl_insens.envs.AtariSettings`. ``at_start`` also records before any learning.
    """

    def __init__(self, env: str | AtariSettings, every: int = 10_000, steps: int = 200, episodes: int = 1,
                 seed: int = 0, methods=("insens",), out_dir: str | Path = "inspections",
                 at_start: bool = True, device: str = "cpu", crf: int = DEFAULT_CRF, scale: float = 1.0,
                 fps: int = 30, verbose: int = 0) -> None:
        super().__init__(verbose)
        if every < 1 or steps < 1 or episodes < 1:
            raise ValueError("every, steps and episodes must be positive")
        self.game = env if isinstance(env, AtariSettings) else AtariSettings(check_env_id(env),
                                                                             preprocessing="sb3")
        self.methods = check_methods(methods)
        self.out_dir = Path(out_dir)
        check_video_settings(self.out_dir / "clip.mp4", crf, scale)
        self.every, self.steps, self.episodes, self.seed = every, steps, episodes, seed
        self.at_start, self.device, self.crf, self.scale, self.fps = at_start, device, crf, scale, fps
        self.next_point = 0
        self.warned = False
        self.points: list[dict] = []
        """What each point gave: the step, the clip's path and its numbers (also in ``inspections.jsonl``)."""

    def _on_training_start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        done = self.model.num_timesteps
        self.next_point = (done // self.every + 1) * self.every
        if self.at_start:
            self.inspect(done)

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_point:
            return True
        self.next_point = (self.num_timesteps // self.every + 1) * self.every
        return self.inspect(self.num_timesteps)

    def inspect(self, step: int) -> bool:
        """Record, measure and log the policy at ``step``; False if a Ctrl-C cut the clip short."""
        agent = from_policy(self.model.policy, self.game, steps_trained=step)
        video = self.out_dir / f"step_{step:010d}.mp4"
        result = record(agent, video, episodes=self.episodes, max_steps=self.steps, seed=self.seed,
                        methods=self.methods, fps=self.fps, device=self.device, crf=self.crf,
                        scale=self.scale, progress=self.verbose > 0)
        if result.video is None:
            return False
        stats = clip_statistics(result.run_dir, agent)
        for key, value in stats.items():
            self.logger.record(PREFIX + key, value)
        self._log_video(result.video)
        self.logger.dump(step)
        point = {"step": step, "video": str(result.video), "run_dir": str(result.run_dir), **stats}
        self.points.append(point)
        with open(self.out_dir / LOG_FILE, "a") as log:
            log.write(json.dumps(point) + "\n")
            log.flush()
            os.fsync(log.fileno())
        return not result.interrupted

    def _log_video(self, path: Path) -> None:
        """The clip as a TensorBoard video, where TensorBoard is on and can take one."""
        tensorboard = any(isinstance(f, TensorBoardOutputFormat) for f in self.logger.output_formats)
        missing = tensorboard_video_missing()
        if missing is None and tensorboard:
            frames = np.stack([self._small(frame) for frame in iio.imiter(path)])
            clip = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # [1, T, C, H, W]
            text_outputs = ("stdout", "log", "json", "csv")
            self.logger.record(PREFIX + "clip", Video(clip, self.fps), exclude=text_outputs)
        elif missing is not None and (tensorboard or missing.startswith("tensorboard")) and not self.warned:
            self.warned = True
            print(NO_VIDEO.format(self.out_dir) + f" ({missing})", file=sys.stderr, flush=True)

    @staticmethod
    def _small(frame: np.ndarray) -> np.ndarray:
        import cv2

        if frame.shape[1] <= TENSORBOARD_WIDTH:
            return frame
        height = round(frame.shape[0] * TENSORBOARD_WIDTH / frame.shape[1])
        return cv2.resize(frame, (TENSORBOARD_WIDTH, height), interpolation=cv2.INTER_AREA)
