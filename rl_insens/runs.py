"""Run directories: written (by ``record``) and read (by the viewer) here, and nowhere else.

A run directory is meant to be shared, so nothing in it is ever unpickled: the recorded
agent is a JSON description of its network (each layer's type, constructor arguments and
name as ``named_modules`` gives it, in call order) beside a ``state_dict`` read with
``torch.load(weights_only=True)``. Layer names survive the round trip, since the viewer
addresses neurons by them.

Layout (``FORMAT`` 2)::

    run.json        what was recorded: methods, environment, chunk list, "complete"
    agent.json      the agent: network descriptions, action names, kind, input scale, card
    agent.weights   the networks' state_dicts (tensors only)
    steps.npz       one row per frame: action, logits, probabilities, value, score, ...
    chunks/         chunk_00000.npz ...: screens, observations and attribution maps
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .agents import Agent
from .envs import AtariSettings
from .files import atomic_path, write_json
from .network_description import ChainNetwork, describe

if TYPE_CHECKING:  # the type only: storing needs none of the attribution methods
    from .inspection import StepInspection

FORMAT = 2
META_FILE, AGENT_FILE, WEIGHTS_FILE, STEPS_FILE, CHUNKS = (
    "run.json", "agent.json", "agent.weights", "steps.npz", "chunks")
OLD_AGENT_FILE = "agent.pt"
"""Format 1 kept the agent as a pickle of its modules, which can run code when loaded."""


class RunError(ValueError):
    """The run directory is missing, damaged, or not one this version can read safely."""


def save_agent(agent: Agent, run_dir: Path) -> None:
    """The agent's networks as descriptions and weights; a value network that cannot be
    described is left out (the run then shows no value)."""
    shape = agent.observation_shape
    value = None
    if agent.value_network is not None:
        try:
            value = describe(agent.value_network, shape)
        except ValueError:
            value = None
    weights = {"network": {k: v.detach().cpu() for k, v in agent.network.state_dict().items()}}
    if value is not None:
        weights["value_network"] = {k: v.detach().cpu() for k, v in agent.value_network.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
        torch.save(weights, tmp)
    spec = {"format": FORMAT, "network": describe(agent.network, shape), "value_network": value,
            "kind": agent.kind, "action_meanings": list(agent.action_meanings), "scale": agent.scale,
            "observation_shape": list(shape), "card": agent.card,
            "weights_sha256": hashlib.sha256((run_dir / WEIGHTS_FILE).read_bytes()).hexdigest()}
    write_json(run_dir / AGENT_FILE, spec)


def load_agent(run_dir: str | Path) -> Agent:
    """The agent recorded in ``run_dir``, without unpickling anything."""
    run_dir = Path(run_dir)
    spec_path, weights_path = run_dir / AGENT_FILE, run_dir / WEIGHTS_FILE
    if not spec_path.exists():
        if (run_dir / OLD_AGENT_FILE).exists():
            raise RunError(
                f"{run_dir} was recorded by an older rl-insens that stored the agent as a Python pickle "
                f"({OLD_AGENT_FILE}), which is not opened because loading it could run any code; "
                f"record the run again with `rl-insens record --agent AGENT --out VIDEO.mp4`")
        raise RunError(f"{run_dir} holds no {AGENT_FILE}; record a run with `rl-insens record`")
    try:
        spec = json.loads(spec_path.read_text())
        digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        if digest != spec["weights_sha256"]:
            raise RunError(f"{weights_path} is damaged: it does not match the sha256 in {AGENT_FILE}")
        weights = torch.load(weights_path, map_location="cpu", weights_only=True)
        network = ChainNetwork(spec["network"]["layers"])
        network.load_state_dict(weights["network"])
        value = None
        if spec.get("value_network"):
            value = ChainNetwork(spec["value_network"]["layers"])
            value.load_state_dict(weights["value_network"])
            value.eval()
        card = {**(spec.get("card") or {}), "observation_shape": spec["observation_shape"]}
        settings = AtariSettings.from_dict(card["environment"]) if card.get("environment") else None
        return Agent(network.eval(), spec["action_meanings"], spec["kind"], value, card, spec["scale"],
                     settings)
    except RunError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile,
            pickle.UnpicklingError) as error:
        raise RunError(f"cannot read the agent recorded in {run_dir} ({type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else ''})") from None


def chunk_name(index: int) -> str:
    """The file name of chunk ``index`` in ``chunks/``, zero-padded so that names sort in order."""
    return f"chunk_{index:05d}.npz"


def _half(maps: np.ndarray) -> np.ndarray:
    """float16 by torch's vectorised conversion (numpy's took 5 ms a step of six maps)."""
    return torch.from_numpy(np.ascontiguousarray(maps)).to(torch.float16).numpy()


def write_npz(path: Path, **arrays) -> None:
    """An ``.npz`` that ``np.load`` reads. Byte arrays (screens, observations) are deflated,
    which shrinks them several times over; float maps are stored as they are, since deflate
    saves a fifth of their size at thirty times the cost (it was most of a recording's
    saving time)."""
    with atomic_path(path) as tmp, \
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, value in arrays.items():
            value = np.asanyarray(value)
            if value.dtype == np.uint8:
                entry = name + ".npy"
            else:
                entry = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_STORED
            with archive.open(entry, "w", force_zip64=True) as file:
                np.lib.format.write_array(file, value, allow_pickle=False)


def write_meta(run_dir: Path, meta: dict) -> None:
    """Write ``meta`` as the run's ``run.json`` atomically, stamped with this ``FORMAT``."""
    write_json(run_dir / META_FILE, {**meta, "format": FORMAT})


def read_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (all, or those named), or a :class:`RunError` naming the file."""
    try:
        with np.load(path) as data:
            return {k: data[k] for k in (data.files if keys is None else keys)}
    except FileNotFoundError:
        raise RunError(f"{path} is missing; the run directory is incomplete") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise RunError(f"{path} is damaged or cut short ({type(error).__name__}: {error})") from None


def read_meta(run_dir: Path) -> dict:
    """The run's ``run.json``, or a :class:`RunError` when it is missing, damaged or lacks its chunk list
    or methods."""
    path = run_dir / META_FILE
    try:
        meta = json.loads(path.read_text())
        list(meta["chunks"]), meta["methods"]  # noqa: B018 (present, or a KeyError below)
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a run directory: it has no {META_FILE}; "
                       "record one with `rl-insens record`") from None
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise RunError(f"{run_dir} is not a readable run directory: its {META_FILE} is damaged "
                       f"({type(error).__name__}: {error})") from None
    return meta


LOG_KEYS = ("episode", "t", "action", "reward", "score", "logits", "probs", "value", "active_fraction",
            "fresh")
"""The per-step table (``steps.npz``): one row per frame."""


def step_row(episode: int, t: int, reward: float, score: float, inspection: StepInspection,
             fresh: bool = True) -> dict:
    """A row of the per-step table: where in the play (episode, step ``t``, the step's reward,
    the score before it) and what the network did there (``fresh``: maps computed at this step)."""
    return {"episode": episode, "t": t, "action": inspection.action, "reward": reward, "score": score,
            "logits": inspection.logits, "probs": inspection.action_probs,
            "value": np.nan if inspection.value is None else inspection.value,
            "active_fraction": inspection.active_fraction, "fresh": fresh}


class RunWriter:
    """Writes a run directory as frames come, replacing an earlier run at ``run_dir``.

    Each :meth:`append` adds one chunk and then rewrites the per-step table and ``run.json``,
    so what is on disk is whole up to its last chunk; :meth:`finish` marks it complete (or not),
    :meth:`discard` removes it. An agent that cannot be stored leaves nothing behind.
    """

    def __init__(self, run_dir: str | Path, agent: Agent, meta: dict) -> None:
        self.dir = Path(run_dir)
        if self.dir.exists():
            shutil.rmtree(self.dir)  # an earlier run (the caller checked): its chunks must not mix with ours
        (self.dir / CHUNKS).mkdir(parents=True)
        try:
            save_agent(agent, self.dir)
        except BaseException:
            shutil.rmtree(self.dir)
            raise
        self.meta = {**meta, "chunks": [], "complete": False}
        self.log: dict[str, list] = {k: [] for k in LOG_KEYS}

    @property
    def steps(self) -> int:
        return len(self.log["t"])

    def append(self, rows: list[dict], screens: np.ndarray, observations: np.ndarray,
               maps: dict[str, np.ndarray], ram: np.ndarray | None = None) -> None:
        """One chunk: ``rows`` (each with every ``LOG_KEYS`` entry), the frames' screens,
        observations, maps (``{method: [n, *observation shape]}``, kept as float16) and, for
        ALE games, RAM."""
        start = self.steps
        for row in rows:
            for key in LOG_KEYS:
                self.log[key].append(row[key])
        name = chunk_name(len(self.meta["chunks"]))
        extra = {} if ram is None else {"ram": ram}
        write_npz(self.dir / CHUNKS / name, steps=np.arange(start, self.steps), screens=screens,
                  observations=observations, **extra, **{f"map_{m}": _half(v) for m, v in maps.items()})
        self.meta["chunks"].append(name)
        write_npz(self.dir / STEPS_FILE, **{k: np.array(v) for k, v in self.log.items()})
        write_meta(self.dir, {**self.meta, "steps": self.steps})

    def finish(self, complete: bool = True) -> None:
        write_meta(self.dir, {**self.meta, "steps": self.steps, "complete": complete})

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
