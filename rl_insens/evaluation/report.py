"""What many episodes amount to: the returns' mean, spread and 95% interval, per agent."""

from __future__ import annotations

import statistics
from collections import Counter

import numpy as np

from ..intervals import confidence_interval
from .episodes import Episode


def summary(episodes: list[Episode]) -> dict:
    """Mean, standard deviation and range of the scores, with each episode's seed, score and
    length, and how many were cut off (the model card's numbers)."""
    scores = np.array([e.score for e in episodes])
    return {"mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "min": float(scores.min()), "max": float(scores.max()), "episodes": len(scores),
            "unfinished": sum(not e.finished for e in episodes),
            "seeds": [e.seed for e in episodes], "scores": scores.tolist(),
            "lengths": [e.length for e in episodes]}


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
