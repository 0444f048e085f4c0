"""Scripted evaluation runs: many episodes, seeds and agents, in parallel, resumable.

Work is split into independent tasks, one episode each ``(agent, seed, episode)``; a task's
environment seed depends on nothing else, so a parallel run gives the same results as a
serial one. Finished tasks are appended to a JSON-lines file as they complete, and a resumed
run skips them.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from . import rollout
from .agents import Agent, load_agent
from .files import write_text
from .intervals import confidence_interval
from .parallel import check_backend, run_unordered


@dataclass(frozen=True)
class Task:
    agent: str
    seed: int
    episode: int
    env: str | None = None
    """The game, where the agent's own files do not say it (or say another)."""

    @property
    def env_seed(self) -> int:
        return self.seed * 100_003 + self.episode

    @property
    def key(self) -> str:
        return f"{self.agent}|{self.env or ''}|{self.seed}|{self.episode}"


@dataclass
class Episode:
    seed: int
    score: float
    length: int
    finished: bool
    """False when the episode was cut off (the environment's time limit or ``max_steps``)."""


def play_episode(agent: Agent, env, seed: int, max_steps: int | None = None,
                 watch: Callable[[torch.Tensor, int], None] | None = None) -> Episode:
    """One greedy episode from ``env.reset(seed=seed)``; ``watch(x, action)`` sees each step's
    network input and action (to measure the play without playing it again)."""
    def act(observation: np.ndarray) -> int:
        x = agent.preprocess(observation)
        with torch.no_grad():
            action = int(agent.network(x).argmax(1)[0])
        if watch is not None:
            watch(x, action)
        return action

    score, length, finished = 0.0, 0, False
    for step in rollout.play(act, env, seed, episodes=1, max_steps=max_steps):
        score, length, finished = step.score + step.reward, step.t + 1, step.terminated
    return Episode(seed, score, length, finished)


def play_episodes(agent: Agent, seeds: list[int], progress: bool = True, max_steps: int | None = None,
                  **env_settings) -> list[Episode]:
    """One greedy episode per seed, in the agent's game (``env_settings`` change its settings).

    One torch thread (see ``one_thread``): a single frame gains nothing from more, and a
    training run on the same cores keeps its speed.
    """
    env = agent.make_env(**env_settings)
    try:
        with one_thread():
            return [play_episode(agent, env, seed, max_steps)
                    for seed in tqdm(seeds, desc="episodes", unit="ep", disable=not progress)]
    finally:
        env.close()


def noop_start_seeds(env_id: str, noop_max: int = 30) -> list[int]:
    """The first reset seed giving each no-op start ``1..noop_max`` (``[0]`` when there are none).

    Without sticky actions ALE is deterministic, so a greedy episode depends only on how many
    no-ops ``AtariPreprocessing`` drew at reset (its first draw from the environment's
    generator): these seeds play every episode the setting can produce, and their mean is the
    policy's exact expected return there, where a few random seeds may repeat some starts and
    miss others.
    """
    import ale_py

    if noop_max == 0:
        return [0]
    gym.register_envs(ale_py)
    env = gym.make(env_id)
    first_seed: dict[int, int] = {}
    seed = 0
    while len(first_seed) < noop_max:
        env.reset(seed=seed)
        first_seed.setdefault(int(env.unwrapped.np_random.integers(1, noop_max + 1)), seed)
        seed += 1
    env.close()
    return [first_seed[n] for n in sorted(first_seed)]


def summary(episodes: list[Episode]) -> dict:
    scores = np.array([e.score for e in episodes])
    return {"mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "min": float(scores.min()), "max": float(scores.max()), "episodes": len(scores),
            "unfinished": sum(not e.finished for e in episodes),
            "seeds": [e.seed for e in episodes], "scores": scores.tolist(),
            "lengths": [e.length for e in episodes]}


# ----- one task ---------------------------------------------------------------------------------
_AGENTS: dict[tuple[str, str | None], Agent] = {}


def worker_agent(path: str, env: str | None = None) -> Agent:
    """The agent at ``path`` set to play ``env`` (or its own game), loaded once per worker process."""
    if (path, env) not in _AGENTS:
        _AGENTS[path, env] = load_agent(path, env=env)
    return _AGENTS[path, env]


@contextmanager
def one_thread():
    """One torch thread for the duration of a task: one core per worker, and results identical
    whatever the backend (reductions keep one order)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


# ----- many tasks --------------------------------------------------------------------------------
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

    ``backend``/``address``/``workers`` choose where episodes run (see ``parallel.run_unordered``).
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


def aggregate(results: list[dict]) -> dict:
    """Per agent: mean, standard deviation and 95% confidence interval of the return, and more."""
    per_agent = {}
    for agent in dict.fromkeys(r["agent"] for r in results):
        rows = [r for r in results if r["agent"] == agent]
        returns = [r["return"] for r in rows]
        layers = rows[0]["active_percent"].keys()
        per_agent[agent] = {
            "episodes": len(rows),
            "mean_return": statistics.fmean(returns),
            "std_return": statistics.stdev(returns) if len(rows) > 1 else 0.0,
            "ci95_return": confidence_interval(returns),
            "mean_length": statistics.fmean(r["length"] for r in rows),
            "unfinished_episodes": sum(not r.get("finished", True) for r in rows),  # older runs lack it
            "active_percent": {k: statistics.fmean(r["active_percent"][k] for r in rows) for k in layers},
            "actions": dict(sum((Counter(r["actions"]) for r in rows), Counter())),
        }
    return per_agent
