"""Score an SB3 Atari agent with SB3's own evaluation and with rl-insens, on the same games.

SB3's side: ``PPO.load`` (or the zip's algorithm) and ``evaluate_policy`` on
``make_atari_env(env_id, seed=s)`` + ``VecFrameStack(4)``, one fresh environment per reset seed,
deterministic actions. rl-insens's side: ``load_agent`` and the greedy episodes that
``rl-insens evaluate --seeds 0 --episodes N`` plays (reset seeds 0..N-1). Without sticky actions
an Atari game is decided by its reset seed, so the two should agree game by game. Lengths are
reported too, in their own units: SB3's Monitor sits under the frame skip and counts frames,
rl-insens counts agent steps.

    python scripts/compare_sb3_evaluation.py agents/sb3_ppo_pong/PongNoFrameskip-v4.zip --episodes 10
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np


def sb3_returns(path: Path, env_id: str, seeds: list[int]) -> list[tuple[float, int]]:
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecFrameStack

    from rl_insens.envs import ale_ids

    ale_ids()  # registers the ALE games with gymnasium
    for algorithm in (PPO, A2C, DQN):
        try:
            # As rl-baselines3-zoo's enjoy.py: its schedules are not needed to act.
            model = algorithm.load(path, device="cpu", custom_objects={
                "learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0})
            break
        except (ValueError, KeyError, RuntimeError):
            continue
    returns = []
    for seed in seeds:
        env = VecFrameStack(make_atari_env(env_id, n_envs=1, seed=seed), 4)
        rewards, lengths = evaluate_policy(model, env, n_eval_episodes=1, deterministic=True,
                                           return_episode_rewards=True)
        returns.append((float(rewards[0]), int(lengths[0])))
        env.close()
    return returns


def rl_insens_returns(path: Path, env_id: str, seeds: list[int]) -> list[tuple[float, int]]:
    from rl_insens import load_agent
    from rl_insens.evaluation import play_episodes

    agent = load_agent(path, env=env_id)
    return [(e.score, e.length) for e in play_episodes(agent, seeds)]


@click.command()
@click.argument("agent", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--env", "env_id", default="PongNoFrameskip-v4", show_default=True)
@click.option("--episodes", default=10, show_default=True,
              help="Reset seeds 0..N-1, as `rl-insens evaluate --seeds 0`.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def main(agent: Path, env_id: str, episodes: int, json_out: Path | None) -> None:
    seeds = list(range(episodes))
    theirs, ours = sb3_returns(agent, env_id, seeds), rl_insens_returns(agent, env_id, seeds)
    report = {"agent": str(agent), "env": env_id, "seeds": seeds,
              "sb3_evaluate_policy": [r for r, _ in theirs], "sb3_lengths_frames": [n for _, n in theirs],
              "rl_insens": [r for r, _ in ours], "rl_insens_lengths_steps": [n for _, n in ours],
              "sb3_mean": float(np.mean([r for r, _ in theirs])),
              "rl_insens_mean": float(np.mean([r for r, _ in ours])),
              "same_return": sum(a[0] == b[0] for a, b in zip(theirs, ours, strict=True))}
    click.echo(f"SB3 evaluate_policy: {report['sb3_mean']:+.2f}  {report['sb3_evaluate_policy']}")
    click.echo(f"rl-insens:           {report['rl_insens_mean']:+.2f}  {report['rl_insens']}")
    click.echo(f"the same return in {report['same_return']} of {episodes} games")
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
