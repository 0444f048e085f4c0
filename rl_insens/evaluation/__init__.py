"""Greedy episodes and scripted evaluation runs.

``episodes`` plays them, ``tasks`` schedules many as resumable, parallel tasks (what
``rl-insens evaluate`` runs), and ``report`` sums them up.
"""

from .episodes import Episode, noop_start_seeds, play_episode, play_episodes
from .report import aggregate, summary
from .tasks import Task, run_task, run_tasks

__all__ = ["Episode", "Task", "aggregate", "noop_start_seeds", "play_episode", "play_episodes", "run_task",
           "run_tasks", "summary"]
