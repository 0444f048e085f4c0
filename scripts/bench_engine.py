"""Time exact Insens against the baselines on RLNET (Pong frames) and 2CONV (MNIST digits).

Prints a table and writes JSON with the ratios the project tracks: Insens / IG-50,
naive full-Jacobian / Insens, achieved GFLOP/s and the relative error against the naive path.

    python scripts/bench_engine.py --quick
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import click
import torch
from torch.utils.flop_counter import FlopCounterMode

import rl_insens as ri
import rl_insens.bench.data
from rl_insens.engine import insens_reference

BASELINES = ["gradient", "integrated_gradients", "lrp_epsilon", "lrp_alpha1beta0", "deep_taylor"]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device: str, repeats: int, warmup: int = 1) -> float:
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


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def with_active_fraction(model: torch.nn.Module, x: torch.Tensor, target: float) -> float:
    """Shift all biases down until about ``target`` of the hidden neurons are active on ``x``."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    original = [m.bias.detach().clone() for m in layers]
    low, high = 0.0, 1.0
    for _ in range(30):
        shift = (low + high) / 2
        for layer, bias in zip(layers, original, strict=True):
            layer.bias.data = bias - shift * bias.abs().mean().clamp_min(1e-3) * 10
        fraction = float(ri.neuron_state(model, x).active_fraction.mean())
        low, high = (shift, high) if fraction > target else (low, shift)
    return fraction


def pong_frames(n: int, seed: int) -> torch.Tensor:
    """Stacked observations from random play, as floats in [0, 1]."""
    env = ri.make_pong_env()
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames = []
    for step in range(60 + 10 * n):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if step >= 60 and step % 10 == 0:
            frames.append(torch.as_tensor(obs, dtype=torch.float32) / 255)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.stack(frames[:n])


def mnist_images(n: int, data_dir: Path) -> torch.Tensor:
    images = ri.bench.data.load_mnist(data_dir, train=False)[0][:n] if data_dir.exists() else None
    if images is None:
        torch.manual_seed(0)
        return (torch.rand(n, 1, 28, 28) > 0.8).float()
    return images


def bench_model(name, model, frames, device, repeats, naive_repeats, batches, max_memory) -> dict:
    model = model.to(device).eval()
    one = frames[:1].to(device)
    row: dict = {"model": name, "device": device, "batch": batches[0], "max_memory": max_memory}
    row["active_fraction"] = float(ri.neuron_state(model, one).active_fraction.mean())
    with torch.no_grad():
        row["forward_s"] = median_time(lambda: model(one), device, repeats)
    for method in BASELINES:
        row[f"{method}_s"] = median_time(lambda m=method: ri.attribute(model, one, m), device, repeats)
    row["insens_s"] = median_time(lambda: ri.insens(model, one, max_memory), device, repeats)
    row["insens_per_frame_s_by_batch"] = {}
    for size in batches:
        batch = frames[torch.arange(size) % len(frames)].to(device)
        seconds = median_time(lambda b=batch: ri.insens(model, b, max_memory), device, max(1, repeats // 2))
        row["insens_per_frame_s_by_batch"][size] = seconds / size
    row["insens_batch_per_frame_s"] = row["insens_per_frame_s_by_batch"][batches[0]]
    row["insens_gflop"] = flops(lambda: ri.insens(model, one, max_memory)) / 1e9
    row["insens_gflops_per_s"] = row["insens_gflop"] / row["insens_s"]
    naive = {}
    row["naive_s"] = median_time(lambda: naive.update(v=insens_reference(model, one, torch.float32)),
                                 device, naive_repeats, warmup=0)
    exact = ri.insens(model, one, max_memory)
    row["relative_error_vs_naive"] = float((exact - naive["v"]).abs().max() / naive["v"].abs().max())
    row["ratio_insens_over_ig50"] = row["insens_s"] / row["integrated_gradients_s"]
    row["ratio_naive_over_insens"] = row["naive_s"] / row["insens_s"]
    return row


def write_profile(model, frames, device, max_memory, path: Path) -> None:
    """Where one batched Insens call spends its time, by operator (for tuning the engine)."""
    model, batch = model.to(device).eval(), frames.to(device)
    ri.insens(model, batch, max_memory)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        ri.insens(model, batch, max_memory)
        sync(device)
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    path.write_text(profiler.key_averages().table(sort_by=sort, row_limit=40))


def print_table(rows: list[dict]) -> None:
    columns = ["forward_s", "gradient_s", "integrated_gradients_s", "lrp_epsilon_s", "lrp_alpha1beta0_s",
               "deep_taylor_s", "naive_s", "insens_s", "insens_batch_per_frame_s"]
    print(f"{'model':<22}{'device':<7}{'active':>7}" + "".join(f"{c[:-2][:14]:>16}" for c in columns))
    for r in rows:
        print(f"{r['model']:<22}{r['device']:<7}{r['active_fraction']:>7.1%}"
              + "".join(f"{r[c] * 1e3:>14.1f}ms" for c in columns))
    for r in rows:
        print(f"{r['model']} on {r['device']}: Insens/IG-50 = {r['ratio_insens_over_ig50']:.2f}x, "
              f"naive/Insens = {r['ratio_naive_over_insens']:.0f}x, "
              f"{r['insens_gflop']:.2f} GFLOP at {r['insens_gflops_per_s']:.1f} GFLOP/s, "
              f"batched " + ", ".join(f"{1 / t:.0f} frames/s at {n}"
                                       for n, t in r["insens_per_frame_s_by_batch"].items()) + ", "
              f"rel. error vs naive {r['relative_error_vs_naive']:.1e}")


@click.command()
@click.option("--quick", is_flag=True, help="Fewer repeats (under 5 minutes on 2 CPU cores).")
@click.option("--batch", "batches", multiple=True, type=int, default=[16], show_default=True,
              help="Frames per batched Insens call; repeat the option for several sizes (the first is "
                   "the table's).")
@click.option("--device", "devices", multiple=True, type=click.Choice(["cpu", "cuda"]),
              help="Devices to time on; repeatable. Default: the CPU, and CUDA when present.")
@click.option("--max-memory", type=int, default=None,
              help="Working-memory bound in bytes handed to the engine (default: the engine's, per device).")
@click.option("--active", default=0.25, show_default=True, help="Target fraction of active neurons.")
@click.option("--agent", type=click.Path(path_type=Path), default=Path("agents/pong_rlnet"),
              help="Also time this RLNET agent on its own frames, if it exists.")
@click.option("--mnist-dir", type=click.Path(path_type=Path), default=Path("../shared/data/mnist"))
@click.option("--json-out", type=click.Path(path_type=Path), default=Path("bench_engine.json"))
@click.option("--profile-out", type=click.Path(path_type=Path), default=None,
              help="Also write an operator profile of one batched Insens call of the first network.")
def main(quick, batches, devices, max_memory, active, agent, mnist_dir, json_out, profile_out):
    if min(batches) < 1:
        raise click.BadParameter("batch sizes must be at least 1", param_hint="--batch")
    if "cuda" in devices and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA device here", param_hint="--device")
    devices = list(devices) or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # Full float32 for every method, baselines included ("no TF32"); the engine ensures it itself.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    repeats, naive_repeats = (5, 1) if quick else (20, 3)
    frames = pong_frames(max(batches), seed=0)
    digits = mnist_images(max(batches), mnist_dir)
    rlnet, twoconv = ri.RLNet(), ri.TwoConv((1, 28, 28), 10)
    cases = [("RLNET (random)", rlnet, frames, with_active_fraction(rlnet.eval(), frames[:1], active)),
             ("2CONV (random)", twoconv, digits, with_active_fraction(twoconv.eval(), digits[:1], active))]
    if (agent / "card.json").exists():
        cases.insert(0, ("RLNET (agent)", ri.agents.load_agent(agent).network, frames, None))
    rows = []
    for device in devices:
        for name, model, inputs, _ in cases:
            rows.append(bench_model(name, model, inputs, device, repeats, naive_repeats, batches, max_memory))
    print_table(rows)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "tf32": False}
    json_out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {json_out}")
    if profile_out is not None:
        name, model, inputs, _ = cases[0]
        write_profile(model, inputs[:max(batches)], devices[-1], max_memory, profile_out)
        print(f"wrote {profile_out} ({name}, batch {max(batches)}, {devices[-1]})")


if __name__ == "__main__":
    main()
