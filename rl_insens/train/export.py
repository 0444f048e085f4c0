"""Ship a training run's checkpoint as an rl-insens agent, and score checkpoints the same way:
the model card's greedy evaluation, the learning curve, and the run's wall time."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

from stable_baselines3 import PPO

from .curve import plot_learning_curve, training_wall_time
from .ppo import STICKY_PROBABILITY, TrainConfig


def export_agent(
    cfg: TrainConfig, agent_dir: str | Path, eval_episodes: int = 10, eval_seed: int = 1000,
    note: str | None = None, checkpoint: str | Path | None = None,
) -> dict:
    """Ship a checkpoint (by default the run's latest) as an rl-insens agent: weights, model card
    with scores, learning curve up to that checkpoint."""
    from ..agents import load_agent, save_agent

    model = PPO.load(checkpoint or cfg.resume_path, device="cpu")
    steps = int(model.num_timesteps)
    agent_dir = Path(agent_dir)
    csv_path = Path(cfg.out_dir) / "episodes.csv"
    wall_time = training_wall_time(csv_path, steps) if csv_path.exists() else None
    card = {
        "name": f"RLNET {cfg.settings.game} (PPO)",
        "environment": cfg.settings.as_dict(),
        "algorithm": "PPO (stable-baselines3)",
        "hyperparameters": {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "env_settings")},
        "steps_trained": steps,
        "wall_time_hours": None if wall_time is None else round(wall_time / 3600, 2),
        "preprocessing_note": "network input: uint8 frames / 255 (Agent.preprocess), shape (4, 84, 84)",
    }
    if note:
        card["training_note"] = note
    save_agent(model.policy, agent_dir, card)
    seeds = list(range(eval_seed, eval_seed + eval_episodes))
    card["evaluation"] = {
        "protocol": f"greedy actions; {eval_episodes} episodes with reset seeds {seeds[0]}..{seeds[-1]} in "
                    "the training setting and with sticky actions; one episode per no-op start in the "
                    "training setting (deterministic given the start, so their mean is exact)",
        **greedy_evaluation(load_agent(agent_dir), seeds),
    }
    save_agent(model.policy, agent_dir, card)
    if csv_path.exists():
        plot_learning_curve(csv_path, agent_dir / "learning_curve.png", up_to_step=steps,
                            title=f"RLNET on {cfg.settings.game}, PPO training")
    return card


def greedy_evaluation(agent, seeds: list[int], max_steps: int | None = None) -> dict:
    """The model card's protocol: greedy returns on ``seeds`` in the training setting and with
    sticky actions, and on every no-op start of the training setting (its exact mean)."""
    from ..evaluation import noop_start_seeds, play_episodes, summary

    play = partial(play_episodes, agent, max_steps=max_steps)
    every_start = noop_start_seeds(agent.game.env_id, agent.game.noop_max)
    sticky = summary(play(seeds, repeat_action_probability=STICKY_PROBABILITY))
    return {"training_setting": summary(play(seeds)),
            "training_setting_every_noop_start": summary(play(every_start)),
            f"sticky_actions_{STICKY_PROBABILITY}": sticky}


def validate_checkpoint(cfg: TrainConfig, first_seed: int = 2000, episodes: int = 10,
                        max_steps: int | None = None, checkpoint: str | Path | None = None) -> dict:
    """Score a checkpoint (by default the run's latest) and append it to ``validation.jsonl``.

    The seeds are ones the card does not use, for the sticky setting above all; in the training
    setting the every-start mean is exact, so it, not a sample of seeds, is what to compare.

    ``max_steps`` cuts episodes short to screen quickly; cut episodes count as unfinished.
    """
    from ..agents import load_agent

    checkpoint = checkpoint or cfg.resume_path
    seeds = list(range(first_seed, first_seed + episodes))
    record = {"steps": int(PPO.load(checkpoint, device="cpu").num_timesteps), "max_steps": max_steps,
              **greedy_evaluation(load_agent(checkpoint, env=cfg.settings), seeds, max_steps)}
    with open(Path(cfg.out_dir) / "validation.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record
