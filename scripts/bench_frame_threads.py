"""Why the recorder runs Insens and IG-50 frames side by side: a second torch thread within a
frame against a second frame at once, on 16 frames of the bundled agent's greedy play.

Prints ms per frame for Insens on one and on two torch threads, then Insens and IG-50 over the
16 frames two ways: one frame after another on two threads, and side by side as the recorder
takes them (:func:`rl_insens.inspection.attribute_parts`, one torch thread each); medians of
``--repeats`` rounds, with their min-max.

    PYTHONPATH=. python scripts/bench_frame_threads.py     # about a minute on 2 CPU cores
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import click
import torch
from bench_engine import greedy_frames

import rl_insens as ri
from rl_insens.attribution import attribute
from rl_insens.inspection import attribute_parts

METHODS = ("insens", "integrated_gradients")


def interleaved(ways: dict, frames: int, repeats: int, threads: int) -> dict[str, list[float]]:
    """ms a frame of each way, its rounds taken in turn with the others' so that a change in the
    host's speed touches every way alike; ``ways`` maps a name to (torch threads, function)."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(repeats + 1):  # the first round warms up
        for name, (count, fn) in ways.items():
            torch.set_num_threads(count)
            began = time.perf_counter()
            fn()
            if round_:
                times[name].append(1e3 * (time.perf_counter() - began) / frames)
    torch.set_num_threads(threads)
    return times


@click.command()
@click.option("--agent", type=click.Path(path_type=Path), default=Path("agents/pong_rlnet"),
              show_default=True)
@click.option("--frames", default=16, show_default=True)
@click.option("--repeats", default=5, show_default=True)
def main(agent: Path, frames: int, repeats: int) -> None:
    threads = torch.get_num_threads()
    loaded = ri.load_agent(agent)
    x = greedy_frames(loaded, frames)
    targets = loaded.network(x).argmax(1)
    session = loaded.session

    def one(i: int, method: str) -> torch.Tensor:
        return attribute(session, x[i:i + 1], method, target=targets[i:i + 1])

    def insens_frames() -> None:
        for i in range(frames):
            one(i, "insens")

    def after_another() -> None:
        for method in METHODS:
            for i in range(frames):
                one(i, method)

    def side_by_side() -> None:  # the recorder's own call
        for method in METHODS:
            attribute_parts(session, x, method, targets, [[i] for i in range(frames)], None)

    ways = {"Insens, one torch thread": (1, insens_frames),
            f"Insens, {threads} torch threads": (threads, insens_frames),
            f"Insens and IG-50, one frame after another on {threads} threads": (threads, after_another),
            f"Insens and IG-50, {threads} frames side by side, one thread each": (threads, side_by_side)}
    measured = interleaved(ways, frames, repeats, threads)
    medians = [statistics.median(times) for times in measured.values()]
    for name, times in measured.items():
        print(f"{name}: {statistics.median(times):.1f} ms a frame [{min(times):.1f}-{max(times):.1f}]")
    print(f"a second thread within a frame: {medians[0] / medians[1]:.2f}x; frames side by side: "
          f"{medians[2] / medians[3]:.2f}x")


if __name__ == "__main__":
    main()
