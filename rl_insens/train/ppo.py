"""Train RLNET on any ALE game with stable-baselines3 PPO, resumably.

Readable top to bottom: settings, environments, model (new or resumed), a callback that
logs episodes, shows progress and checkpoints, then ``learn``. The one resume checkpoint is
overwritten atomically, so an interrupted run loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from tqdm import tqdm

from ..agents import RLNetExtractor
from ..envs import PONG, AtariSettings, check_env_id, make_env
from ..files import atomic_path, write_json
from .curve import plot_learning_curve

STICKY_PROBABILITY = 0.25
"""Repeat probability of sticky actions, the ALE v5 default, for robustness training and checks."""


def option(help: str, *, resumed: bool = True, flag: str | None = None) -> dict:
    """Metadata making a :class:`TrainConfig` field an option of ``rl-insens train``.

    Args:
        help: the option's help line.
        resumed: False for a setting of one invocation (where to write, when to stop, how to
            step the environments), which a resumed run does not take from its config.json.
        flag: for a boolean field, the name of the flag that sets the opposite of its default
            (``--dummy-envs`` for ``subprocess_envs``); other fields get ``--field-name``.

    Returns:
        The ``metadata`` to give :func:`dataclasses.field`.
    """
    return {"help": help, "resumed": resumed, "flag": flag}


@dataclass
class TrainConfig:
    """PPO with the rl-zoo Atari hyper-parameters and RLNET as the network.

    The defaults are the bundled agent's run. Fields with :func:`option` metadata are the
    ``rl-insens train`` options (generated from them); :meth:`for_run` merges those given with
    a resumed run's own settings."""

    out_dir: str = field(default="agents/pong_rlnet/train", metadata=option(
        "Holds resume.zip (model + optimiser), config.json, episodes.csv and the learning curve.",
        resumed=False))
    total_steps: int = field(default=10_000_000, metadata=option(
        "Length of the learning-rate and clip-range schedules."))
    """Length of the learning-rate and clip-range schedules, in agent steps (rl-zoo's 10M).
    Shorter schedules shrink the clip range too early: a 4M one left the return flat near 0
    from 1.7M steps on. Training can stop as soon as the agent meets its target."""
    stop_at: int | None = field(default=None, metadata=option(
        "Checkpoint and stop after this many steps (resume later).", resumed=False))
    seed: int = field(default=0, metadata=option("Seeds the network and the environments."))
    n_envs: int = field(default=8, metadata=option("Parallel environments."))
    n_steps: int = field(default=128, metadata=option("Steps per environment per rollout."))
    n_epochs: int = 4
    batch_size: int = field(default=256, metadata=option("PPO minibatch size."))
    learning_rate: float = 2.5e-4
    """Initial value; decays linearly to 0 over ``total_steps``."""
    clip_range: float = 0.1
    """Initial value; decays linearly to 0 over ``total_steps``."""
    sticky_envs: int = field(default=0, metadata=option(
        f"Environments with sticky actions (p {STICKY_PROBABILITY})."))
    """How many of the ``n_envs`` repeat the previous action with ``STICKY_PROBABILITY`` (sticky
    actions), so that the policy cannot rely on exact timing; the others use ``env_settings``."""
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    checkpoint_every: int = field(default=100_000, metadata=option("Agent steps between checkpoints."))
    subprocess_envs: bool = field(default=True, metadata=option(
        "Step environments in this process.", resumed=False, flag="--dummy-envs"))
    """Step the environments in worker processes (SB3's SubprocVecEnv)."""
    env_settings: dict = field(default_factory=PONG.as_dict)
    """The game and its preprocessing (:class:`~rl_insens.envs.AtariSettings` fields)."""

    @property
    def settings(self) -> AtariSettings:
        """``env_settings`` as settings; runs from before the preprocessing was named used gymnasium's."""
        return AtariSettings.from_dict({"preprocessing": "gymnasium", **self.env_settings})

    @property
    def resume_path(self) -> Path:
        return Path(self.out_dir) / "resume.zip"

    @classmethod
    def for_run(cls, out_dir: str | Path, resume: bool = False, env_id: str | None = None,
                **given) -> TrainConfig:
        """The settings of the run in ``out_dir``, from three sources in order.

        Args:
            out_dir: the run's folder.
            resume: take the run's own settings (its ``config.json``, if there is one) for
                every field not given, except those of one invocation (``resumed=False``).
            env_id: a new run plays this game with its minimal action set; a resumed run
                must already play it.
            given: field values; ``None`` means not given.

        Returns:
            ``given``, else the resumed run's, else the defaults.

        Raises:
            ValueError: an unknown game, or not the game the resumed run plays.
        """
        saved_path = Path(out_dir) / "config.json"
        saved = json.loads(saved_path.read_text()) if resume and saved_path.exists() else {}
        values = {f.name: saved[f.name] for f in fields(cls)
                  if f.name in saved and f.metadata.get("resumed", True)}
        values.update({name: value for name, value in given.items() if value is not None})
        if env_id is not None:
            check_env_id(env_id)
            played = saved.get("env_settings", {}).get("env_id", env_id)
            if played != env_id:
                raise ValueError(f"--env {env_id}: the run in {out_dir} plays {played}")
            if not saved:
                new = AtariSettings(env_id, preprocessing="gymnasium", repeat_action_probability=0.0)
                values["env_settings"] = new.as_dict()
        return cls(**{**values, "out_dir": str(out_dir)})


def linear(initial: float):
    """SB3 schedule: ``progress_remaining`` runs from 1 to 0 over ``total_steps``."""
    return lambda progress_remaining: progress_remaining * initial


def make_envs(cfg: TrainConfig, seed: int) -> VecEnv:
    """The ``cfg.n_envs`` training environments, environment ``i`` seeded ``seed + i``: the first
    ``cfg.sticky_envs`` with sticky actions, in worker processes when ``cfg.subprocess_envs``."""
    def make(rank: int):
        sticky = STICKY_PROBABILITY if rank < cfg.sticky_envs else cfg.settings.repeat_action_probability

        def thunk():
            if multiprocessing.parent_process() is not None:  # a worker: Ctrl-C is the trainer's to handle
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            env = Monitor(make_env(cfg.settings, repeat_action_probability=sticky))
            env.reset(seed=seed + rank)
            env.action_space.seed(seed + rank)
            return env

        return thunk

    vec_cls = SubprocVecEnv if cfg.subprocess_envs and cfg.n_envs > 1 else DummyVecEnv
    return vec_cls([make(rank) for rank in range(cfg.n_envs)])


class TrainingMonitor(BaseCallback):
    """Progress bar with steps/s and ETA, an episode CSV, and periodic atomic checkpoints."""

    def __init__(self, cfg: TrainConfig, target_steps: int) -> None:
        super().__init__()
        self.cfg, self.target_steps = cfg, target_steps
        self.csv_path = Path(cfg.out_dir) / "episodes.csv"
        self.next_checkpoint = 0
        self.recent: list[float] = []
        self.stop_requested = False

    def request_stop(self, *_) -> None:
        """Signal handler: end ``learn`` at the next step, which then checkpoints. Raising from
        the handler instead can leave SubprocVecEnv half-way through a step, and its close() hangs."""
        self.stop_requested = True

    def _on_training_start(self) -> None:
        if not self.csv_path.exists():
            self._append(["step", "return", "length", "wall_time"])
        done = self.model.num_timesteps
        self.next_checkpoint = done + self.cfg.checkpoint_every
        self.bar = tqdm(total=self.target_steps, initial=done, unit="step", smoothing=0.05)

    def _append(self, row: list) -> None:
        # Opened per row, so that the log on disk is always the one being written, whatever
        # replaced the file in the meantime (a checkout, a copy).
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow(row)

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                episode = info["episode"]
                self._append([self.num_timesteps, episode["r"], episode["l"], round(time.time(), 1)])
                self.recent = (self.recent + [float(episode["r"])])[-20:]
                self.bar.set_postfix(mean_return_20=f"{np.mean(self.recent):.1f}")
        self.bar.update(self.training_env.num_envs)
        if self.num_timesteps >= self.next_checkpoint:
            self.save_checkpoint()
            self.next_checkpoint += self.cfg.checkpoint_every
        return self.num_timesteps < self.target_steps and not self.stop_requested

    def save_checkpoint(self) -> None:
        with atomic_path(self.cfg.resume_path) as tmp:
            self.model.save(tmp)

    def _on_training_end(self) -> None:
        self.save_checkpoint()
        self.bar.close()
        plot_learning_curve(self.csv_path, Path(self.cfg.out_dir) / "learning_curve.png",
                            title=f"RLNET on {self.cfg.settings.game}, PPO training")


def train(cfg: TrainConfig, resume: bool = False, device: str = "cpu",
          callbacks: list[BaseCallback] | tuple = ()) -> PPO:
    """Train (or resume) and return the model; checkpoints land in ``cfg.out_dir``.

    ``device`` runs the policy and its updates there; checkpoints load on any device.
    ``callbacks`` run after the training monitor at every step (an
    :class:`~rl_insens.train.callback.InsensCallback`, say); any of them can stop training.
    """
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    resuming = resume and cfg.resume_path.exists()
    if resume and not resuming:
        print(f"no checkpoint at {cfg.resume_path}; starting a new run")

    if resuming:
        model = PPO.load(cfg.resume_path, device=device)
        envs = make_envs(cfg, seed=cfg.seed + model.num_timesteps)  # fresh episodes after resume
        model.set_env(envs)
    else:
        envs = make_envs(cfg, seed=cfg.seed)
        model = PPO(
            "CnnPolicy",
            envs,
            n_steps=cfg.n_steps,
            n_epochs=cfg.n_epochs,
            batch_size=cfg.batch_size,
            learning_rate=linear(cfg.learning_rate),
            clip_range=linear(cfg.clip_range),
            ent_coef=cfg.ent_coef,
            vf_coef=cfg.vf_coef,
            policy_kwargs=dict(features_extractor_class=RLNetExtractor, net_arch=[]),
            seed=cfg.seed,
            device=device,
            verbose=0,
        )
    write_json(Path(cfg.out_dir) / "config.json", asdict(cfg))

    target = min(cfg.total_steps, cfg.stop_at or cfg.total_steps)
    if model.num_timesteps >= target:
        print(f"already trained {model.num_timesteps} steps (target {target})")
        return model
    monitor = TrainingMonitor(cfg, target)
    previous = {sig: signal.signal(sig, monitor.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        model.learn(
            total_timesteps=cfg.total_steps - model.num_timesteps if resuming else cfg.total_steps,
            callback=CallbackList([monitor, *callbacks]),
            reset_num_timesteps=not resuming,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        envs.close()
    if monitor.stop_requested:
        print(f"interrupted: checkpoint saved at {model.num_timesteps} steps")
        raise KeyboardInterrupt
    return model
