"""Scripted evaluation: serial equals parallel, resuming skips finished work; faithfulness metrics."""

import importlib.util
import json
import math
import statistics

import pytest
import torch
from torch import nn

import rl_insens.faithfulness as f
from rl_insens.envs import make_pong_env
from rl_insens.evaluation import Task, aggregate, noop_start_seeds, play_episodes, run_tasks
from rl_insens.intervals import confidence_interval


@pytest.mark.slow
def test_parallel_equals_serial_and_resume_skips(rlnet_agent_dir, tmp_path):
    tasks = [Task(rlnet_agent_dir, 0, e) for e in range(2)]
    serial = run_tasks(tasks, tmp_path / "serial.jsonl", max_steps=30, progress=False)
    parallel = run_tasks(tasks, tmp_path / "parallel.jsonl", workers=2, max_steps=30, progress=False)
    drop = ("seconds", "steps_per_second")
    assert [{k: v for k, v in r.items() if k not in drop} for r in serial] == \
           [{k: v for k, v in r.items() if k not in drop} for r in parallel]
    # An interrupted run: one finished episode on disk and a line cut short.
    partial = tmp_path / "resumed.jsonl"
    partial.write_text(json.dumps(serial[0]) + "\n" + '{"key": "cut sh')
    with pytest.raises(FileExistsError):
        run_tasks(tasks, partial, max_steps=30, progress=False)
    resumed = run_tasks(tasks, partial, resume=True, max_steps=30, progress=False)
    keys = [json.loads(line)["key"] for line in partial.read_text().splitlines()]
    assert keys == [tasks[0].key, tasks[1].key]  # only the missing episode ran again
    assert [r["return"] for r in resumed] == [r["return"] for r in serial]
    summary = aggregate(resumed)[rlnet_agent_dir]
    assert summary["episodes"] == 2 and set(summary["active_percent"]) == {"conv1", "conv2", "conv3", "fc1"}
    assert summary["unfinished_episodes"] == 2  # both cut at 30 steps, long before a game of Pong ends


@pytest.mark.slow
def test_ray_backend_equals_serial(rlnet_agent_dir, tmp_path):
    pytest.importorskip("ray")
    tasks = [Task(rlnet_agent_dir, 1, e) for e in range(2)]
    drop = ("seconds", "steps_per_second")
    serial = run_tasks(tasks, tmp_path / "serial.jsonl", max_steps=20, progress=False)
    on_ray = run_tasks(tasks, tmp_path / "ray.jsonl", workers=2, max_steps=20, progress=False, backend="ray")
    assert [{k: v for k, v in r.items() if k not in drop} for r in serial] == \
           [{k: v for k, v in r.items() if k not in drop} for r in on_ray]


@pytest.mark.slow
def test_noop_start_seeds_reach_every_start_once():
    """Five no-op starts rather than the game's thirty keep the test short (each reset reloads the
    ROM); the claim does not depend on how many there are."""
    seeds = noop_start_seeds("ALE/Pong-v5", noop_max=5)
    env = make_pong_env(noop_max=5)
    try:
        starts = [state_after_reset(env, s) for s in seeds]
        others = {state_after_reset(env, s) for s in range(200, 210)}
    finally:
        env.close()
    assert len(seeds) == 5 and len(set(starts)) == 5
    assert others <= set(starts)  # any other seed repeats one of those starts exactly
    fresh = make_pong_env(noop_max=5)  # a reset with a seed is a new start, whatever came before
    assert state_after_reset(fresh, seeds[-1]) == starts[-1]
    fresh.close()
    assert noop_start_seeds("ALE/Pong-v5", noop_max=0) == [0]


def state_after_reset(env, seed: int) -> bytes:
    env.reset(seed=seed)
    return env.unwrapped.ale.getRAM().tobytes()


def test_play_episodes_counts_episodes_cut_short(rlnet_agent_dir):
    from rl_insens.agents import load_agent

    episodes = play_episodes(load_agent(rlnet_agent_dir), [0, 1], progress=False, max_steps=20)
    assert [(e.length, e.finished) for e in episodes] == [(20, False), (20, False)]


def test_evaluate_command_says_when_episodes_were_cut_off(rlnet_agent_dir, tmp_path):
    from click.testing import CliRunner

    from rl_insens.cli import main as cli

    out = tmp_path / "eval.json"
    args = ["evaluate", "--agent", rlnet_agent_dir, "--episodes", "2", "--max-steps", "20",
            "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "2 of them cut off by the step limit" in result.output
    assert json.loads(out.read_text())["agents"][rlnet_agent_dir]["unfinished_episodes"] == 2


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        run_tasks([Task("a", 0, 0)], tmp_path / "x.jsonl", backend="threads", progress=False)


def test_confidence_interval_is_students_t():
    """Against t tables: [1, 2, 3] has mean 2 and s = 1, and t(0.975, 2) = 4.303; 61 values of
    sd s have t(0.975, 60) = 2.000, where a normal approximation (1.96) is 2% too narrow."""
    low, high = confidence_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 4.303 / 3 ** 0.5, abs=1e-3)
    assert high == pytest.approx(2 + 4.303 / 3 ** 0.5, abs=1e-3)
    values = [float(v % 7) for v in range(61)]
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    low, high = confidence_interval(values)
    assert (low + high) / 2 == pytest.approx(mean)
    assert (high - low) / 2 == pytest.approx(2.000 * sd / 61 ** 0.5, rel=2e-4)
    assert confidence_interval([4.0]) == (4.0, 4.0) == confidence_interval([4.0, 4.0, 4.0])
    assert all(math.isnan(end) for end in confidence_interval([]))


def toy_problem(n=64, d=100, relevant=10, seed=0):
    """Class 0's logit is a positive sum over the first ``relevant`` inputs; others are ignored."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[0].weight[0, :relevant] = 1.0
        net[2].weight.copy_(torch.tensor([[3.0, 0, 0, 0], [0, 0, 0, 0]]))
        net[2].bias.copy_(torch.tensor([0.0, 19.5]))  # class 0 needs a relevant sum above 6.5
    x = torch.rand(n, d) * 0.3 + 0.7
    perfect = torch.zeros(n, d)
    perfect[:, :relevant] = 1.0
    return net, x, perfect, torch.rand(n, d)


def test_metrics_rank_a_perfect_map_above_a_random_one():
    net, x, perfect, random = toy_problem()
    assert (net(x).argmax(1) == 0).all()
    good = f.deletion_insertion(net, x, perfect)
    bad = f.deletion_insertion(net, x, random)
    assert good["auc_deletion_prob"] < bad["auc_deletion_prob"]
    assert good["auc_insertion_prob"] > bad["auc_insertion_prob"]
    good_noise = f.noise_agreement(net, x, perfect, fraction=0.5, sigma=3.0)
    bad_noise = f.noise_agreement(net, x, random, fraction=0.5, sigma=3.0)
    assert good_noise["lowest"] == 1.0 > bad_noise["lowest"]
    assert good_noise["highest"] < good_noise["lowest"]


def test_spearman_is_the_rank_correlation_of_each_row_pair():
    a = torch.arange(10.0)[None]
    assert float(f.spearman(a, a)) == pytest.approx(1.0)
    assert float(f.spearman(a, -a)) == pytest.approx(-1.0)
    # Ties take their mean rank: y's ranks are 1, 2, 3.5, 5, 3.5, so rho = 8 / sqrt(10 * 9.5).
    x, y = torch.tensor([[1.0, 2, 3, 4, 5]]), torch.tensor([[5.0, 6, 7, 8, 7]])
    assert float(f.spearman(x, y)) == pytest.approx(8 / 95 ** 0.5)
    rows = torch.cat([x, x.flip(1), a[:, :5]])
    assert f.spearman(rows, torch.cat([y, y, y])).tolist() == pytest.approx(
        [float(f.spearman(r[None], y)) for r in rows])
    assert f.spearman(x.view(1, 1, 5), y.view(1, 5, 1)).shape == (1,)  # each row flattened


def test_evaluate_methods_report():
    net, x, _, _ = toy_problem(n=8)
    report = {m: f.measure_method(net, x, m) for m in ("gradient", "insens")}
    assert set(report) == {"gradient", "insens"}
    assert "| gradient |" in f.markdown_table(report)


@pytest.mark.slow
def test_closed_loop_and_tasks_on_every_backend(rlnet_agent_dir):
    frames = torch.rand(6, 4, 84, 84)
    run = dict(agent_path=rlnet_agent_dir, frames=frames, methods=["gradient"], closed_loop_episodes=1,
               closed_loop_steps=15, progress=False)
    serial = f.run_faithfulness(**run)
    loops = serial["closed_loop"]
    assert set(loops) == {"clean", "random", "gradient/lowest", "gradient/highest"}
    assert loops["clean"]["mean_agreement"] == 1.0 and loops["clean"]["episodes"][0]["length"] == 15
    assert "Closed loop" in f.markdown_table(serial["methods"], loops)
    assert f.run_faithfulness(**run, workers=2) == serial
    if importlib.util.find_spec("ray"):
        assert f.run_faithfulness(**run, workers=2, backend="ray") == serial


def test_noise_goes_only_where_chosen():
    flat = torch.full((2, 10), 0.5)
    chosen = torch.tensor([[0, 1], [8, 9]])
    noisy = f.with_noise(flat, chosen, torch.full((2, 10), 1.0))
    assert noisy[0, :2].eq(1.0).all() and noisy[0, 2:].eq(0.5).all() and noisy[1, 8:].eq(1.0).all()


def test_ray_backend_without_ray_says_how_to_get_it(monkeypatch):
    import sys

    from rl_insens.parallel import run_unordered

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"rl-insens\[ray\]"):
        list(run_unordered(abs, [1, -2], backend="ray"))
    assert sorted(run_unordered(abs, [1, -2])) == [(0, 1), (1, 2)]
