"""The ``rl-insens`` command: parses arguments and calls the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .attribution import METHODS

DEFAULT_AGENT = Path("agents/pong_rlnet")


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Inspect Atari policies with switched linear projections and Insens."""


@main.command()
@click.option("--out-dir", default="agents/pong_rlnet/train", show_default=True)
@click.option("--total-steps", default=6_000_000, show_default=True, help="Schedule length in agent steps.")
@click.option("--stop-at", type=int, default=None, help="Checkpoint and stop after this many steps.")
@click.option("--seed", default=0, show_default=True)
@click.option("--n-envs", default=8, show_default=True)
@click.option("--n-steps", default=128, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--checkpoint-every", default=100_000, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--dummy-envs", is_flag=True, help="Step environments in this process.")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/resume.zip if it exists.")
def train(out_dir, total_steps, stop_at, seed, n_envs, n_steps, batch_size, checkpoint_every, threads,
          dummy_envs, resume):
    """Train RLNET on Pong with PPO (resumable)."""
    import torch

    from .train import TrainConfig
    from .train import train as run

    torch.set_num_threads(threads)
    cfg = TrainConfig(out_dir=out_dir, total_steps=total_steps, stop_at=stop_at, seed=seed, n_envs=n_envs,
                      n_steps=n_steps, batch_size=batch_size, checkpoint_every=checkpoint_every,
                      subprocess_envs=not dummy_envs)
    try:
        run(cfg, resume=resume)
    except KeyboardInterrupt:
        fail("interrupted; the checkpoint was saved, continue with --resume")


@main.command("export-agent")
@click.option("--train-dir", default="agents/pong_rlnet/train", show_default=True)
@click.option("--out", "agent_dir", default=str(DEFAULT_AGENT), show_default=True)
@click.option("--episodes", default=10, show_default=True)
def export_agent(train_dir, agent_dir, episodes):
    """Ship the training checkpoint as an agent directory with a model card."""
    from .train import TrainConfig
    from .train import export_agent as run

    cfg = TrainConfig(out_dir=train_dir)
    if not cfg.resume_path.exists():
        fail(f"no checkpoint at {cfg.resume_path}")
    card = run(cfg, agent_dir, eval_episodes=episodes)
    click.echo(json.dumps(card["evaluation"], indent=2))


@main.command()
@click.option("--agent", "agent_path", default=str(DEFAULT_AGENT), show_default=True)
@click.option("--episodes", default=10, show_default=True)
@click.option("--seed", default=1000, show_default=True, help="Episode i uses seed SEED + i.")
@click.option("--sticky", is_flag=True, help="Sticky actions (repeat probability 0.25).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def evaluate(agent_path, episodes, seed, sticky, json_out):
    """Play greedy episodes and report the scores."""
    from .agents import load_agent
    from .evaluate import play_episodes, summary

    try:
        agent = load_agent(agent_path)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    settings = {"repeat_action_probability": 0.25} if sticky else {}
    result = summary(play_episodes(agent, list(range(seed, seed + episodes)), **settings))
    click.echo(f"mean {result['mean']:.2f} ± {result['std']:.2f} over {episodes} episodes")
    click.echo(f"scores: {result['scores']}")
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))


@main.command()
@click.option("--agent", "agent_path", default=str(DEFAULT_AGENT), show_default=True,
              help="rl-insens agent directory or stable-baselines3 .zip")
@click.option("--episodes", default=1, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Cap on agent steps per episode.")
@click.option("--seed", default=0, show_default=True, help="Episode i resets with seed SEED + i.")
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated.")
@click.option("--every", default=1, show_default=True, help="Compute maps every K-th step.")
@click.option("--fps", default=30, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("recordings/pong.mp4"),
              show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--layout", type=click.Choice(["methods", "stack"]), default="methods", show_default=True,
              help="methods: screen and one panel per method; stack: Insens on each of the 4 frames.")
@click.option("--batch", default=16, show_default=True, help="Frames per batched attribution call.")
def record(agent_path, episodes, max_steps, seed, methods, every, fps, out, device, layout, batch):
    """Record an annotated side-by-side video of an agent playing Pong."""
    from .record import record as run

    try:
        result = run(agent_path, out, episodes=episodes, max_steps=max_steps, seed=seed,
                     methods=[m.strip() for m in methods.split(",") if m.strip()], every=every, fps=fps,
                     device=device, layout=layout, batch=batch)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    click.echo(f"video: {result.video}\ncontact sheet: {result.contact_sheet}\nrun data: {result.run_dir}")
    if result.interrupted:
        click.echo(f"interrupted after {result.steps} steps; the video holds the frames so far", err=True)
        sys.exit(130)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True)
def view(run_dir, host, port):
    """Serve a local web page over a run directory written by `rl-insens record`."""
    from .viewer import serve

    server = serve(run_dir, host, port)
    if server.problem:
        click.echo(f"warning: {server.problem} (the page will say so)", err=True)
    click.echo(f"viewing {run_dir} at http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
