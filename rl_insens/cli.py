"""The ``rl-insens`` command: parses arguments and calls the library."""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import click

from .attribution import METHODS
from .engine import UnsupportedModelError
from .faithfulness import CHECKS, FRACTION, SIGMA
from .files import atomic_path, check_writable_file, write_json, write_text
from .train import TrainConfig
from .video import DEFAULT_CRF, MAX_SCALE

DEFAULT_AGENT = Path("agents/pong_rlnet")


def where_tasks_run(command):
    """The ``--workers/--backend/--address`` options of commands made of independent tasks."""
    command = click.option("--address", default=None, help="Ray cluster address (with --backend ray); "
                           "without it a local Ray instance.")(command)
    command = click.option("--backend", type=click.Choice(["process", "ray"]), default="process",
                           show_default=True, help="process: local worker processes; ray: Ray tasks "
                           "(pip install 'rl-insens[ray]').")(command)
    return click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Parallel workers.")(command)


def env_option(command):
    """``--env``: the game to play, when the agent's own files do not say or say otherwise."""
    return click.option("--env", "env_id", default=None, metavar="ENV_ID",
                        help="The game: a Gymnasium ALE id such as PongNoFrameskip-v4 or ALE/Breakout-v5 "
                        "[default: the zoo's files next to a zip, else the agent's model card].")(command)


USER_ERRORS = (FileNotFoundError, ValueError, UnsupportedModelError)
"""What a user's mistake raises in the library: said in one line, without a traceback."""


def load_agent_or_fail(path, env_id: str | None, need_game: bool = True):
    """The agent at ``path`` set to its game, or a one-line error (before any work starts)."""
    from .agents import load_agent

    try:
        agent = load_agent(path, env=env_id)
        if need_game:
            agent.game  # noqa: B018  (raises, naming --env, when no game is known)
        return agent
    except USER_ERRORS as error:
        fail(str(error))


def fail(message: str) -> None:
    """Exit with ``message`` as a one-line error (status 2, like a usage error), without a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Inspect Atari policies with switched linear projections and Insens."""


def config_options(config_class):
    """Options for the fields of dataclass ``config_class`` that carry :func:`~rl_insens.train.ppo.option`
    metadata, in field order: ``--field-name`` (or the field's ``flag``), its type and help from the
    field. A setting a resumed run keeps defaults to ``None`` here, so that the merge
    (``config_class.for_run``) can tell it was not given."""
    hints = typing.get_type_hints(config_class)

    def decorate(command):
        for f in reversed([f for f in dataclasses.fields(config_class) if "help" in f.metadata]):
            kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
            help = f.metadata["help"]
            if f.metadata["flag"]:
                settings = dict(flag_value=not f.default, default=f.default)
            elif f.metadata["resumed"]:
                settings = dict(type=kind, default=None)
                help += f"  [default: {f.default}, or the resumed run's]"
            else:
                settings = dict(type=kind, default=f.default, show_default=f.default is not None)
            name = f.metadata["flag"] or f"--{f.name.replace('_', '-')}"
            command = click.option(name, f.name, help=help, **settings)(command)
        return command

    return decorate


@main.command()
@env_option
@config_options(TrainConfig)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where PPO's updates run (the environments always step on the CPU).")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/resume.zip if it exists.")
@click.option("--inspect-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Every N agent steps, record and measure the policy into OUT_DIR/inspections.")
@click.option("--inspect-steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Greedy steps per inspection clip (reset seed 0).")
@click.option("--inspect-methods", default="insens", show_default=True,
              help="Comma-separated, for the clips.")
def train(env_id, threads, device, resume, inspect_every, inspect_steps, inspect_methods, **settings):
    """Train RLNET with PPO on an ALE game (resumable; by default the bundled agent's run).

    Options left unset take the resumed run's values (its config.json), else TrainConfig's.
    A new run with --env plays that game with its minimal action set. With --inspect-every the
    policy is recorded and measured as it learns: clips in OUT_DIR/inspections, numbers in
    OUT_DIR/inspections/inspections.jsonl and under insens/ in the training logs.
    """
    import torch

    from .train import train as run
    from .train.callback import InsensCallback

    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device here")
    torch.set_num_threads(threads)
    try:
        cfg = TrainConfig.for_run(resume=resume, env_id=env_id, **settings)
    except ValueError as error:
        fail(str(error))
    callbacks = []
    if inspect_every:
        try:
            methods = [m.strip() for m in inspect_methods.split(",") if m.strip()]
            callbacks.append(InsensCallback(cfg.settings, every=inspect_every, steps=inspect_steps,
                                            methods=methods, out_dir=Path(cfg.out_dir) / "inspections",
                                            device=device))
        except ValueError as error:
            fail(str(error))
    try:
        run(cfg, resume=resume, device=device, callbacks=callbacks)
    except KeyboardInterrupt:
        fail("interrupted; the checkpoint was saved, continue with --resume")


def _saved_train_config(train_dir: str) -> TrainConfig:
    """The configuration of the run in ``train_dir``, which must hold a checkpoint."""
    cfg = TrainConfig.for_run(train_dir, resume=True)
    if not cfg.resume_path.exists():
        fail(f"no checkpoint at {cfg.resume_path}")
    return cfg


@main.command("export-agent")
@click.option("--train-dir", default=TrainConfig().out_dir, show_default=True,
              help="The training run's folder (train's --out-dir).")
@click.option("--out", "agent_dir", default=str(DEFAULT_AGENT), show_default=True)
@click.option("--episodes", default=10, show_default=True)
@click.option("--note", default=None, help="Goes into the model card, e.g. how the schedule changed.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A copy of an earlier checkpoint instead of TRAIN_DIR/resume.zip.")
def export_agent(train_dir, agent_dir, episodes, note, checkpoint):
    """Ship a training checkpoint as an agent directory with a model card."""
    from .train import export_agent as run

    cfg = _saved_train_config(train_dir)
    card = run(cfg, agent_dir, eval_episodes=episodes, note=note, checkpoint=checkpoint)
    click.echo(json.dumps(card["evaluation"], indent=2))


@main.command("validate-checkpoint")
@click.option("--train-dir", default=TrainConfig().out_dir, show_default=True,
              help="The training run's folder (train's --out-dir).")
@click.option("--first-seed", default=2000, show_default=True, help="Seeds the model card does not use.")
@click.option("--episodes", default=10, show_default=True)
@click.option("--max-steps", type=int, default=None,
              help="Cut episodes at this many steps to screen quickly (they count as unfinished).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A copy of an earlier checkpoint instead of TRAIN_DIR/resume.zip.")
def validate_checkpoint(train_dir, first_seed, episodes, max_steps, checkpoint):
    """Score a training checkpoint greedily (plain and sticky) into TRAIN_DIR/validation.jsonl."""
    from .train import validate_checkpoint as run

    cfg = _saved_train_config(train_dir)
    record = run(cfg, first_seed=first_seed, episodes=episodes, max_steps=max_steps, checkpoint=checkpoint)
    click.echo(" ".join(f"{k}: {v['mean']:+.1f} ({v['unfinished']} unfinished)" if isinstance(v, dict)
                        else f"{k}: {v}" for k, v in record.items()))


@main.command()
@click.option("--agent", "agents", multiple=True, default=[str(DEFAULT_AGENT)], show_default=True,
              help="Agent directory or SB3 zip; repeat for several agents.")
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True,
              help="Episodes per agent and seed.")
@click.option("--seeds", "seeds", multiple=True, type=int, default=[0], show_default=True,
              help="Repeat for several seeds.")
@env_option
@where_tasks_run
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cap on agent steps per episode.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=Path("evaluation.json"),
              show_default=True)
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), default=None)
@click.option("--resume", is_flag=True, help="Continue an interrupted run, skipping finished episodes.")
def evaluate(agents, episodes, seeds, env_id, workers, backend, address, max_steps, json_out, csv_out,
             resume):
    """Play greedy episodes of one or more agents, each in its game, and report per-agent statistics."""
    import csv

    from .evaluation import Task, aggregate, run_tasks

    for path in agents:
        load_agent_or_fail(path, env_id)
    tasks = [Task(a, s, e, env_id) for a in agents for s in seeds for e in range(episodes)]
    results_path = json_out.with_suffix(".episodes.jsonl")
    try:
        for path in (json_out, results_path, *([csv_out] if csv_out else [])):
            check_writable_file(path)
        results = run_tasks(tasks, results_path, workers=workers, resume=resume, max_steps=max_steps,
                            backend=backend, address=address)
    except (FileExistsError, ImportError, ValueError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail(f"interrupted; the finished episodes are in {results_path}, continue with --resume")
    report = {"agents": aggregate(results), "episodes": results}
    write_json(json_out, report)
    if csv_out:
        with atomic_path(csv_out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["agent", "seed", "episode", "env_seed", "return", "length", "seconds"])
            for r in results:
                writer.writerow([r["agent"], r["seed"], r["episode"], r["env_seed"], r["return"], r["length"],
                                 r["seconds"]])
    for agent, stats in report["agents"].items():
        low, high = stats["ci95_return"]
        click.echo(f"{agent}: mean return {stats['mean_return']:.2f} ± {stats['std_return']:.2f} "
                   f"(95% CI {low:.2f}..{high:.2f}) over {stats['episodes']} episodes")
        if stats["unfinished_episodes"]:
            click.echo(f"  {stats['unfinished_episodes']} of them cut off by the step limit: their score "
                       "is the one at the cut (greedy play can fall into a rally that never ends)")
    click.echo(f"wrote {json_out}" + (f" and {csv_out}" if csv_out else "") + f"; episodes in {results_path}")


@main.command()
@click.option("--agent", "agent_path", default=str(DEFAULT_AGENT), show_default=True,
              help="rl-insens agent directory, stable-baselines3 .zip or CleanRL .cleanrl_model")
@env_option
@click.option("--episodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="More than one: a video and run directory per episode, in a folder named after --out.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cap on agent steps per episode.")
@click.option("--seed", default=0, show_default=True, help="Episode i resets with seed SEED + i.")
@where_tasks_run
@click.option("--resume", is_flag=True, help="With several episodes: continue, skipping finished ones.")
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated.")
@click.option("--every", default=1, show_default=True, help="Compute maps every K-th step.")
@click.option("--fps", default=30, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="The video: .mp4, or .gif for a GIF  [default: recordings/GAME.mp4]")
@click.option("--crf", type=click.IntRange(0, 51), default=DEFAULT_CRF, show_default=True,
              help="MP4 quality, x264's CRF: lower is better and larger (0: lossless; before: 15).")
@click.option("--scale", type=click.FloatRange(0, MAX_SCALE, min_open=True), default=1.0, show_default=True,
              help="Resize the video's frames by this factor (0.5: half the width and height).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--layout", type=click.Choice(["methods", "stack"]), default="methods", show_default=True,
              help="methods: screen and one panel per method (one method: both larger); "
              "stack: Insens on each of the 4 frames.")
@click.option("--batch", default=16, show_default=True, help="Frames per batched attribution call.")
def record(agent_path, env_id, episodes, max_steps, seed, workers, backend, address, resume, methods, every,
           fps, out, crf, scale, device, layout, batch):
    """Record an annotated side-by-side video of an agent playing its game.

    With --episodes N above 1, each episode gets its own video, contact sheet and run directory
    in the folder OUT without its suffix (recordings/pong.mp4: recordings/pong/episode_0000.mp4
    ...), recorded by --workers processes or Ray tasks, and --resume skips finished episodes.
    """
    from .record import record as run

    agent = load_agent_or_fail(agent_path, env_id)
    out = out or Path("recordings") / f"{agent.game.game}.mp4"
    if episodes > 1:
        return _record_episodes(agent_path, env_id, out, episodes, max_steps, seed, workers, backend, address,
                                resume, methods, every, fps, crf, scale, device, layout, batch)
    try:
        result = run(agent, out, episodes=episodes, max_steps=max_steps, seed=seed,
                     methods=[m.strip() for m in methods.split(",") if m.strip()], every=every, fps=fps,
                     device=device, layout=layout, batch=batch, crf=crf, scale=scale)
    except (FileNotFoundError, ValueError, UnsupportedModelError) as error:
        fail(str(error))
    if result.video is None:
        click.echo("interrupted before the first frames were done; nothing was written", err=True)
        sys.exit(130)
    click.echo(f"video: {result.video}\ncontact sheet: {result.contact_sheet}\nrun data: {result.run_dir}")
    if result.interrupted:
        click.echo(f"interrupted after {result.steps} steps; the video, contact sheet and run data hold "
                   "those frames", err=True)
        sys.exit(130)


def _record_episodes(agent_path, env_id, out, episodes, max_steps, seed, workers, backend, address, resume,
                     methods, every, fps, crf, scale, device, layout, batch) -> None:
    from .recordings import record_episodes

    folder = out.with_suffix("")
    try:
        videos = record_episodes(agent_path, folder, episodes, env=env_id, max_steps=max_steps, seed=seed,
                                 methods=[m.strip() for m in methods.split(",") if m.strip()], every=every,
                                 fps=fps, layout=layout, crf=crf, scale=scale, suffix=out.suffix.lower(),
                                 batch=batch, device=device, workers=workers, backend=backend,
                                 address=address, resume=resume)
    except (*USER_ERRORS, FileExistsError, ImportError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail(f"interrupted; the finished episodes are in {folder}, continue with --resume")
    click.echo(f"{len(videos)} videos, contact sheets and run directories in {folder}/")


@main.command(context_settings={"allow_interspersed_args": True})
@click.option("--agents", "first", required=True, metavar="A [B ...]",
              help="Agent directories, SB3 zips or CleanRL checkpoints, one row each; the first plays.")
@click.argument("more", nargs=-1, metavar="")
@env_option
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="States: greedy steps of the first agent (or the first STEPS of --states).")
@click.option("--states", "states_dir", type=click.Path(path_type=Path), default=None,
              help="Take the states from this run directory (rl-insens record) instead.")
@click.option("--seed", default=0, show_default=True, help="Reset seed of the first agent's play.")
@click.option("--methods", default="insens,gradient", show_default=True,
              help="Comma-separated, one column each.")
@click.option("--names", default=None, help="Comma-separated row captions [default: the agents' file names].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare.mp4"), show_default=True,
              help="The video: .mp4 or .gif.")
@click.option("--crf", type=click.IntRange(0, 51), default=DEFAULT_CRF, show_default=True,
              help="MP4 quality (x264's CRF).")
@click.option("--scale", type=click.FloatRange(0, MAX_SCALE, min_open=True), default=1.0, show_default=True)
@click.option("--fps", default=30, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def compare(first, more, env_id, steps, states_dir, seed, methods, names, out, crf, scale, fps, device):
    """Several agents on the same states: one row per agent, one column per method, one colour
    scale per column (rl-insens compare --agents A B C --steps 300 --out compare.mp4)."""
    from .compare import agent_names, states_from_run
    from .compare import compare as run
    from .runs import RunError

    paths = [first, *more]
    agents = [load_agent_or_fail(path, env_id, need_game=states_dir is None and i == 0)
              for i, path in enumerate(paths)]
    try:
        chosen = [m.strip() for m in methods.split(",") if m.strip()]
        captions = [n.strip() for n in names.split(",")] if names else agent_names(paths)
        states = states_from_run(states_dir, steps) if states_dir else None
        written = run(agents, out, states=states, steps=steps, seed=seed, methods=chosen, names=captions,
                      fps=fps, crf=crf, scale=scale, device=device)
    except (*USER_ERRORS, RunError) as error:
        fail(str(error))
    click.echo(f"video: {written}\ncontact sheet: {written.with_suffix('.png')}\n"
               f"run data, one directory per agent (rl-insens view): {written.with_suffix('.run')}/")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
def view(run_dir, host, port):
    """Serve a local web page over a run directory written by `rl-insens record`."""
    from .viewer import serve

    try:
        server = serve(run_dir, host, port)
    except OSError as error:
        fail(f"cannot serve on {host}:{port}: {error.strerror or error}")
    if server.problem:
        click.echo(f"warning: {server.problem} (the page will say so)", err=True)
    click.echo(f"viewing {run_dir} at http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@click.option("--agent", "agent_path", default=str(DEFAULT_AGENT), show_default=True)
@env_option
@click.option("--frames", default=200, show_default=True, help="Frames sampled from the agent's own play.")
@click.option("--seed", default=0, show_default=True)
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated.")
@click.option("--checks", default=",".join(CHECKS), show_default=True,
              help="Comma-separated; objects and interventions need a game with an object table "
              "(Pong, Breakout).")
@click.option("--fraction", default=FRACTION, show_default=True, help="Share of inputs that get noise.")
@click.option("--sigma", default=SIGMA, show_default=True, help="Standard deviation of that noise.")
@click.option("--closed-loop-episodes", default=0, show_default=True,
              help="Episodes played on noisy frames per condition (clean, random, least/most relevant).")
@click.option("--closed-loop-steps", default=1000, show_default=True, help="Agent steps per such episode.")
@where_tasks_run
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("faithfulness"), show_default=True)
def faithfulness(agent_path, env_id, frames, seed, methods, checks, fraction, sigma, closed_loop_episodes,
                 closed_loop_steps, workers, backend, address, out_dir):
    """Measure how faithfully each attribution method shows what the policy relies on."""
    import time

    from . import faithfulness as f
    from .inspection import check_methods

    agent = load_agent_or_fail(agent_path, env_id)
    try:
        chosen = check_methods([m.strip() for m in methods.split(",") if m.strip()])
        checks = f.check_checks([c.strip() for c in checks.split(",") if c.strip()])
    except USER_ERRORS as error:
        fail(str(error))
    start = time.perf_counter()
    x = f.sample_frames(agent, frames, seed, interventions="interventions" in checks)
    try:
        report = f.run_faithfulness(agent_path, x, chosen, closed_loop_episodes, closed_loop_steps, seed,
                                    fraction, sigma, workers, backend, address, env=env_id, checks=checks)
    except ImportError as error:
        fail(str(error))
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"agent": agent_path, "environment": agent.game.as_dict(), "frames": frames, "seed": seed,
            "checks": list(checks), "fraction": fraction, "sigma": sigma, "workers": workers,
            "seconds": round(time.perf_counter() - start, 1),
            "closed_loop_episodes": closed_loop_episodes, "closed_loop_steps": closed_loop_steps}
    table = f.markdown_table(report["methods"], report["closed_loop"], closed_loop_steps)
    write_json(out_dir / "faithfulness.json", {"meta": meta, **report})
    write_text(out_dir / "faithfulness.md", table)
    f.plot_curves(report["methods"], out_dir / "faithfulness.png")
    f.plot_cascading(report["methods"], out_dir / "cascading.png")
    click.echo(table)
    click.echo(f"wrote {out_dir}/faithfulness.{{json,md,png}} (in {meta['seconds']:.0f} s)")


@main.command()
@click.argument("name", type=click.Choice(["mnist", "cifar10", "smallnorb"]))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the data set's files; without it, a checksummed download into the cache.")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--seeds", multiple=True, type=int, default=[0, 1, 2], show_default=True)
@click.option("--epochs", type=int, default=None,
              help="At most (early stopping on validation) [default: 10 mnist, 30 cifar10, 20 smallnorb].")
@click.option("--sigma", default=1.0, show_default=True, help="Standard deviation of the noise.")
@click.option("--clip", is_flag=True, help="Clip the noise to [0, 1].")
@click.option("--retrain", is_flag=True, help="Train again even where a saved model exists.")
def bench(name, data_dir, results, seeds, epochs, sigma, clip, retrain):
    """Reproduce the paper's supervised 2CONV results (section 4.1, Table 3)."""
    from .bench import supervised, tables

    epochs = epochs or {"mnist": 10, "cifar10": 30, "smallnorb": 20}[name]
    try:
        if name == "mnist":
            report = supervised.mnist_benchmark(data_dir, results, seeds=tuple(seeds), sigma=sigma, clip=clip,
                                                epochs=epochs, reuse=not retrain)
            click.echo(tables.mnist_markdown(report))
        else:
            run, markdown = (supervised.cifar10_benchmark, tables.cifar10_markdown) if name == "cifar10" \
                else (supervised.smallnorb_benchmark, tables.smallnorb_markdown)
            report = run(data_dir, results, seeds=tuple(seeds), epochs=epochs, reuse=not retrain)
            click.echo(markdown(report))
    except (FileNotFoundError, ValueError, OSError) as error:
        fail(f"{error} (pass --data-dir with the {name} files)")
    click.echo(f"wrote the report and figures to {results}/")


if __name__ == "__main__":
    main()
