"""Scripted evaluation runs: many episodes, seeds and agents, in parallel, resumable.

Work is split into independent tasks, one episode each ``(agent, seed, episode)``; a task's
environment seed depends on nothing else, so a parallel run gives the same results as a
serial one. Finished tasks are appended to a JSON-lines file as they complete, and a resumed
run skips them, provided they were played under the same conditions.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from ..agents import load_agent
from ..files import write_text
from ..parallel import check_backend, run_unordered
from ..workers import one_thread, worker_agent
from .episodes import play_episode


@dataclass(frozen=True)
class Task:
    """One greedy episode to play: everything that decides it, and nothing else."""

    agent: str
    seed: int
    episode: int
    env: str | None = None
    """The game, where the agent's own files do not say it (or say another)."""

    @property
    def env_seed(self) -> int:
        """The reset seed, a function of ``seed`` and ``episode`` only."""
        return self.seed * 100_003 + self.episode

    @property
    def key(self) -> str:
        """The task's name in the results file, by which a resumed run finds it done."""
        return f"{self.agent}|{self.env or ''}|{self.seed}|{self.episode}"


def run_task(task: Task, max_steps: int | None = None) -> dict:
    """Play one greedy episode and measure it: return, length, actions, active neurons, time."""
    with one_thread():
        return _play(task, max_steps)


def _play(task: Task, max_steps: int | None) -> dict:
    agent = worker_agent(task.agent, task.env)
    actions: Counter = Counter()
    active: dict[str, float] = {}

    def watch(x: torch.Tensor, action: int) -> None:
        actions[action] += 1
        for layer, state in agent.session(x).neurons.layers.items():
            active[layer] = active.get(layer, 0.0) + float(state.active_fraction[0])

    env = agent.make_env()
    start = time.perf_counter()
    try:
        episode = play_episode(agent, env, task.env_seed, max_steps, watch)
    finally:
        env.close()
    seconds = time.perf_counter() - start
    length = episode.length
    return {"key": task.key, **asdict(task), "game": agent.game.env_id, "env_seed": task.env_seed,
            "return": episode.score,
            "length": length, "finished": episode.finished,
            "actions": {agent.action_meanings[a]: n for a, n in sorted(actions.items())},
            "active_percent": {k: round(100 * v / max(length, 1), 3) for k, v in active.items()},
            "seconds": round(seconds, 3), "steps_per_second": round(length / seconds, 1) if seconds else None}


def agent_digest(path: str | Path) -> str:
    """sha256 of what defines an agent: its zip, or its directory's card and weights."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def conditions(agent_path: str, env: str | None, max_steps: int | None) -> dict:
    """Everything besides the seed that decides an episode of this agent: a resumed run
    keeps earlier episodes only where these are the same."""
    settings = load_agent(agent_path, env=env).game.as_dict()
    return {"agent_sha256": agent_digest(agent_path), "environment": settings, "max_steps": max_steps}


def _check_resumable(done: dict[str, dict], wanted: dict[str, dict], results_path: Path) -> None:
    """Refuse to mix episodes played under other conditions, naming what differs."""
    for record in done.values():
        now = wanted.get((record["agent"], record.get("env")))
        if now is None:
            continue
        before = record.get("conditions")
        if before is None:
            raise ValueError(f"{results_path} does not say how its episodes were played (an older "
                             "rl-insens wrote it); remove it or write to another --json")
        if before["max_steps"] != now["max_steps"]:
            raise ValueError(f"{results_path} was played with --max-steps {before['max_steps']}, not "
                             f"{now['max_steps']}; resume with the same option or write to another --json")
        if before["environment"] != now["environment"]:
            changed = sorted(k for k in {**before["environment"], **now["environment"]}
                             if before["environment"].get(k) != now["environment"].get(k))
            raise ValueError(f"the environment settings of {record['agent']} ({', '.join(changed)}) differ "
                             f"from those {results_path} was played with; write to another --json")
        if before["agent_sha256"] != now["agent_sha256"]:
            raise ValueError(f"the agent at {record['agent']} has changed since {results_path} was "
                             "written; write to another --json")


def _read_done(results_path: Path) -> dict[str, dict]:
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption: its task runs again
                done[record["key"]] = record
    return done


def run_tasks(tasks: Iterable[Task], results_path: Path, workers: int = 1, resume: bool = False,
              max_steps: int | None = None, progress: bool = True, backend: str = "process",
              address: str | None = None) -> list[dict]:
    """Run tasks (skipping those already in ``results_path`` when resuming), appending each result.

    Args:
        tasks: the episodes to play.
        results_path: the JSON-lines file each finished episode is appended to.
        workers: how many episodes run at once (see :func:`~rl_insens.parallel.run_unordered`).
        resume: continue ``results_path``, skipping its episodes; without it an existing file
            is refused.
        max_steps: agent steps after which an episode is cut off.
        progress: show a progress bar.
        backend: ``process`` or ``ray``, where the episodes run.
        address: the Ray cluster's address, for ``backend="ray"``.

    Returns:
        One result per task, in the order of ``tasks``, those read back from the file included.
    """
    tasks = list(tasks)
    check_backend(backend)
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if results_path.exists() and not resume:
        raise FileExistsError(f"{results_path} exists: pass resume=True to continue it, or remove it")
    wanted = {(agent, env): conditions(agent, env, max_steps)
              for agent, env in dict.fromkeys((t.agent, t.env) for t in tasks)}
    done = _read_done(results_path)
    _check_resumable(done, wanted, results_path)
    if done:  # drop any line cut short by the interruption before appending
        write_text(results_path, "".join(json.dumps(r) + "\n" for r in done.values()))
    todo = [t for t in tasks if t.key not in done]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="episode", disable=not progress)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with open(results_path, "a") as sink:
        play = partial(run_task, max_steps=max_steps)
        for _, record in run_unordered(play, todo, workers, backend, address):
            record["conditions"] = wanted[record["agent"], record.get("env")]
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            done[record["key"]] = record
            bar.update(1)
    bar.close()
    return [done[t.key] for t in tasks]
