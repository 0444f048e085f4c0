"""Time exact Insens against Captum's integrated gradients (IG-50) on real inputs, frame by frame.

Rows: the bundled agent on frames of its own greedy play, and 2CONV on real MNIST test digits.
Each input is timed alone (the median of ``--repeats`` runs after one warm-up), Insens and IG-50
in the same process, and the table gives the per-input ratio Insens / IG-50 as its median and
min-max spread over the inputs. Also: the naive full-Jacobian path on one input (its ratio to
the engine and the engine's relative error against it) and batched Insens in frames/s.
Last, ``rl-insens record``'s steps/s on the bundled agent, with all six methods and with Insens
alone, split into environment and policy, engine, baselines, drawing, encoding, saving and the
rest (setup and bookkeeping). Last of all, each target with its figure; ``--runs 3`` runs it all
three times back to back and gives each target's spread over the runs.
Before and after, a 1024² matrix product's GFLOP/s says how fast the host was at the time (on a
shared host it can vary by half from one minute to the next; the load average does not see it).

    python scripts/bench_engine.py              # 16 agent frames, 16 digits, one run
    python scripts/bench_engine.py --runs 3     # the README's figures: three runs, about 5 minutes
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import torch

import rl_insens as ri
import rl_insens.bench.data
from rl_insens.engine import insens_reference


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def greedy_frames(agent, n: int, seed: int = 0, skip: int = 60, every: int = 10) -> torch.Tensor:
    """Network inputs of the agent's own greedy play: every ``every``-th step after ``skip``."""
    env = agent.make_env()
    obs, _ = env.reset(seed=seed)
    frames: list[torch.Tensor] = []
    step = 0
    while len(frames) < n:
        x = agent.preprocess(obs)
        if step >= skip and step % every == 0:
            frames.append(x[0])
        with torch.no_grad():
            obs, _, terminated, truncated, _ = env.step(int(agent.network(x).argmax(1)[0]))
        if terminated or truncated:
            obs, _ = env.reset()
        step += 1
    env.close()
    return torch.stack(frames)


def with_active_fraction(model: torch.nn.Module, x: torch.Tensor, target: float) -> float:
    """Shift all biases down until about ``target`` of the hidden neurons are active on ``x``."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    original = [m.bias.detach().clone() for m in layers]
    low, high, fraction = 0.0, 1.0, 1.0
    for _ in range(30):
        shift = (low + high) / 2
        for layer, bias in zip(layers, original, strict=True):
            layer.bias.data = bias - shift * bias.abs().mean().clamp_min(1e-3) * 10
        fraction = float(ri.neuron_state(model, x).active_fraction.mean())
        low, high = (shift, high) if fraction > target else (low, shift)
    return fraction


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_inputs(name: str, model: torch.nn.Module, inputs: torch.Tensor, repeats: int, batch: int,
                 naive: bool) -> dict:
    """Per-input Insens and IG-50 times, the naive path on the first input, batched throughput."""
    device = inputs.device
    insens_s, ig_s, ratios = [], [], []
    for x in inputs.split(1):
        target = model(x).argmax(1)
        a = median_time(lambda x=x: ri.insens(model, x), device, repeats)
        b = median_time(lambda x=x, t=target: ri.attribute(model, x, "integrated_gradients", t), device,
                        repeats)
        insens_s.append(a)
        ig_s.append(b)
        ratios.append(a / b)
    stack = inputs[torch.arange(batch) % len(inputs)]
    batch_s = median_time(lambda: ri.insens(model, stack), device, max(1, repeats // 2))
    row = {
        "model": name, "inputs": len(inputs), "device": str(device),
        "active_fraction": float(ri.neuron_state(model, inputs).active_fraction.mean()),
        "insens_s": spread(insens_s), "ig50_s": spread(ig_s), "ratio_insens_over_ig50": spread(ratios),
        "per_input_ratio": ratios, "batched_frames_per_s": batch / batch_s, "batch": batch,
    }
    if naive:
        first, reference = inputs[:1], {}
        def run_reference():
            reference["v"] = insens_reference(model, first, torch.float32)

        row["naive_s"] = median_time(run_reference, device, 1, warmup=0)
        # The engine on the same input timed again right after, so that one disturbed timing of
        # the per-input loop cannot set this ratio.
        engine_s = median_time(lambda: ri.insens(model, first), device, repeats)
        row["ratio_naive_over_insens"] = row["naive_s"] / engine_s
        error = (ri.insens(model, first) - reference["v"]).abs().max() / reference["v"].abs().max()
        row["relative_error_vs_naive"] = float(error)
    return row


class StageClock:
    """Seconds spent in the recorder's stages, from wrappers around the functions it calls."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(("environment_and_policy", "engine", "baselines", "drawing", "encoding",
                                      "saving"), 0.0)

    def timed(self, stage: str, fn):
        def run(*args, **kwargs):
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - began
        return run

    def timed_steps(self, stage: str, play):
        """``play`` with the time spent producing each of its items counted to ``stage``."""
        def run(*args, **kwargs):
            steps = play(*args, **kwargs)
            while True:
                began = time.perf_counter()
                try:
                    step = next(steps)
                except StopIteration:
                    return
                finally:
                    self.seconds[stage] += time.perf_counter() - began
                yield step
        return run


def bench_record(agent_dir: Path, methods: tuple[str, ...], steps: int, device: str) -> dict:
    """``rl-insens record`` on ``steps`` steps of the bundled agent: steps/s and its stages.

    Engine and baselines are split by the per-method times the recorder itself measures; the
    environment and policy are the time spent in the play loop; "other" is what remains of the
    wall time (loading the agent, starting the encoder, the contact sheet, the run's rows).
    """
    import rl_insens.inspection as inspection_module
    import rl_insens.record as record_module

    clock = StageClock()
    writer, drawer = record_module.VideoWriter, record_module.render.FrameDrawer
    saved = (inspection_module.inspect_frames, drawer.__call__, record_module.runs.write_npz, writer.append,
             writer.close, record_module.rollout.play)

    def inspect(*args, **kwargs):
        began = time.perf_counter()
        results = saved[0](*args, **kwargs)
        total = time.perf_counter() - began
        methods_s = {m: sum(r.seconds.get(m, 0.0) for r in results) for m in methods}
        clock.seconds["engine"] += total - sum(v for m, v in methods_s.items() if m != "insens")
        clock.seconds["baselines"] += sum(v for m, v in methods_s.items() if m != "insens")
        return results

    inspection_module.inspect_frames = inspect
    drawer.__call__ = clock.timed("drawing", saved[1])
    record_module.runs.write_npz = clock.timed("saving", saved[2])
    writer.append, writer.close = clock.timed("encoding", saved[3]), clock.timed("encoding", saved[4])
    record_module.rollout.play = clock.timed_steps("environment_and_policy", saved[5])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            done = record_module.record(agent_dir, Path(tmp) / "bench.mp4", max_steps=steps, methods=methods,
                                        device=device, progress=False)
            wall = time.perf_counter() - began
    finally:
        (inspection_module.inspect_frames, drawer.__call__, record_module.runs.write_npz, writer.append,
         writer.close, record_module.rollout.play) = saved
    stages = {**clock.seconds, "other": wall - sum(clock.seconds.values())}
    return {"methods": list(methods), "steps": done.steps, "seconds": wall, "steps_per_s": done.steps / wall,
            "stages_ms_per_step": {k: 1e3 * v / done.steps for k, v in stages.items()}}


def print_record_row(r: dict) -> None:
    stages = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in r["stages_ms_per_step"].items())
    print(f"rl-insens record, {'+'.join(r['methods'])}: {r['steps_per_s']:.1f} steps/s "
          f"({r['steps']} steps in {r['seconds']:.1f} s); ms per step: {stages}")


def print_row(r: dict) -> None:
    q, i, g = r["ratio_insens_over_ig50"], r["insens_s"], r["ig50_s"]
    print(f"{r['model']} ({r['inputs']} inputs, {r['active_fraction']:.0%} active, {r['device']}): "
          f"Insens {i['median'] * 1e3:.1f} ms [{i['min'] * 1e3:.1f}-{i['max'] * 1e3:.1f}], "
          f"IG-50 {g['median'] * 1e3:.1f} ms [{g['min'] * 1e3:.1f}-{g['max'] * 1e3:.1f}], "
          f"Insens/IG-50 median {q['median']:.2f}x [{q['min']:.2f}-{q['max']:.2f}]; "
          + (f"naive/Insens {r['ratio_naive_over_insens']:.0f}x "
             f"(rel. error {r['relative_error_vs_naive']:.1e}); " if "naive_s" in r else "")
          + f"batched {r['batched_frames_per_s']:.1f} frames/s at {r['batch']}")


def host_speed(device: torch.device, seconds: float = 1.0) -> float:
    """GFLOP/s of a 1024² float32 matrix product, repeated for about ``seconds``: a shared host's
    state at the time, which the load average (this machine's own processes only) does not show."""
    a = torch.randn(1024, 1024, device=device)
    a @ a
    sync(device)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        a @ a
        count += 1
    sync(device)
    return count * 2 * 1024**3 / (time.perf_counter() - began) / 1e9


TARGETS = (
    ("RLNET Insens / IG-50 per frame (median)", "<=", 1.5,
     lambda run: run["rows"][0]["ratio_insens_over_ig50"]["median"]),
    ("2CONV Insens / IG-50 per digit (median)", "<=", 2.0,
     lambda run: run["rows"][1]["ratio_insens_over_ig50"]["median"]),
    ("RLNET naive / Insens", ">=", 100.0, lambda run: run["rows"][0].get("ratio_naive_over_insens")),
    ("2CONV naive / Insens", ">=", 100.0, lambda run: run["rows"][1].get("ratio_naive_over_insens")),
    ("record, all six methods, steps/s", ">=", 10.0,
     lambda run: run["record"][0]["steps_per_s"] if run["record"] else None),
    ("record, Insens alone, steps/s", ">=", 15.0,
     lambda run: run["record"][1]["steps_per_s"] if run["record"] else None),
)
"""The engine's targets: the figure, which way it must go, the bound, and where a run has it
(None where the run did not measure it)."""


def measure(frames: int, repeats: int, batch: int, device: torch.device, agent: Path, mnist_dir: Path,
            active: float, naive: bool, record_steps: int, after_a_run: bool = False) -> dict:
    """One run of every row, with the host's speed before and after (``after_a_run``: the load
    average still counts the run before, so it is not warned of)."""
    load = os.getloadavg()[0]
    if load > 1.5 and not after_a_run:
        print(f"warning: load average {load:.1f}; timings on a busy machine are not comparable")
    speed_before = host_speed(device)
    print(f"host: 1024² sgemm at {speed_before:.0f} GFLOP/s")
    loaded = ri.load_agent(agent)
    pong = greedy_frames(loaded, frames).to(device)
    policy = loaded.network.to(device).eval()
    torch.manual_seed(0)
    digits = rl_insens.bench.data.load_mnist(mnist_dir, train=False)[0][:frames].to(device)
    twoconv = ri.TwoConv((1, 28, 28), 10).to(device).eval()
    with_active_fraction(twoconv, digits, active)
    rows = [bench_inputs(f"RLNET agent ({agent.name}, greedy play)", policy, pong, repeats, batch, naive),
            bench_inputs("2CONV (random, MNIST test digits)", twoconv, digits, repeats, batch, naive)]
    for row in rows:
        print_row(row)
    recorder = []
    if record_steps:
        recorder = [bench_record(agent, methods, record_steps, str(device))
                    for methods in (tuple(ri.METHODS), ("insens",))]
        for row in recorder:
            print_record_row(row)
    speed_after = host_speed(device)
    print(f"host: 1024² sgemm at {speed_after:.0f} GFLOP/s after the runs (before: {speed_before:.0f})")
    return {"load_average_at_start": load, "sgemm_gflops_before_and_after": [speed_before, speed_after],
            "rows": rows, "record": recorder}


def target_figures(run: dict) -> list[float | None]:
    """The figures :data:`TARGETS` names, from one run."""
    return [figure(run) for *_, figure in TARGETS]


def print_targets(runs: list[dict]) -> None:
    """Each target with the first run's figure and, over several runs, their min-max."""
    print(f"targets ({len(runs)} run{'s' if len(runs) > 1 else ''}; the first run's figure"
          + (", [min-max] over the runs" if len(runs) > 1 else "") + "):")
    figures = [target_figures(run) for run in runs]
    for k, (name, way, bound, _) in enumerate(TARGETS):
        values = [f[k] for f in figures if f[k] is not None]
        if not values:
            continue
        met = all(v <= bound if way == "<=" else v >= bound for v in values)
        over = f" [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1 else ""
        print(f"  {name}: {values[0]:.2f}{over}, target {way} {bound:g}: {'met' if met else 'NOT met'}")


@click.command()
@click.option("--frames", default=16, show_default=True, help="Agent frames and MNIST digits to time.")
@click.option("--repeats", default=5, show_default=True, help="Timed runs per input (median taken).")
@click.option("--batch", default=16, show_default=True, help="Frames per call for the batched throughput.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--agent", type=click.Path(path_type=Path), default=Path("agents/pong_rlnet"),
              show_default=True)
@click.option("--mnist-dir", type=click.Path(path_type=Path), default=Path("../shared/data/mnist"),
              show_default=True)
@click.option("--active", default=0.25, show_default=True,
              help="Fraction of active neurons the random 2CONV's biases are shifted to on the digits.")
@click.option("--naive/--no-naive", default=True, show_default=True,
              help="Also time the full-Jacobian path on the first input (minutes for the agent).")
@click.option("--json-out", type=click.Path(path_type=Path), default=Path("bench_engine.json"),
              show_default=True)
@click.option("--record-steps", default=300, show_default=True,
              help="Steps of `rl-insens record` to time (0: skip the recorder rows).")
@click.option("--runs", default=1, show_default=True,
              help="Whole runs back to back; the targets are shown for the first with the spread over all.")
def main(frames, repeats, batch, device, agent, mnist_dir, active, naive, json_out, record_steps, runs):
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA device here", param_hint="--device")
    if runs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--runs")
    # Full float32 for every method, baselines included ("no TF32"); the engine ensures it itself.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    measured = []
    for k in range(runs):
        if runs > 1:
            print(f"run {k + 1} of {runs}")
        measured.append(measure(frames, repeats, batch, torch.device(device), agent, mnist_dir, active, naive,
                                record_steps, after_a_run=k > 0))
    print_targets(measured)
    meta = {"finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.processor(),
            "cpus": os.cpu_count(), "tf32": False, "repeats": repeats,
            "insens_call": "ri.insens(model, x), one input per call (reads the chain each call)",
            "ig50_call": "ri.attribute(model, x, 'integrated_gradients', target): Captum, n_steps=50",
            "targets": [{"figure": name, "way": way, "bound": bound} for name, way, bound, _ in TARGETS]}
    first = measured[0]
    json_out.write_text(json.dumps({"meta": meta, **first, "runs": measured[1:],
                                    "targets_per_run": [target_figures(run) for run in measured]}, indent=2))
    print(f"wrote {json_out}")


if __name__ == "__main__":
    main()
