"""Scripted evaluation: serial equals parallel, resuming skips finished work; faithfulness metrics."""

import json

import pytest
import torch
from torch import nn

import rl_insens.faithfulness as f
from rl_insens.evaluate import Task, aggregate, confidence_interval, run_tasks


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory):
    from stable_baselines3 import PPO
    from test_agents import FakeAtari

    from rl_insens.agents import RLNetExtractor, save_agent

    model = PPO("CnnPolicy", FakeAtari(18), n_steps=16, seed=0,
                policy_kwargs=dict(features_extractor_class=RLNetExtractor, net_arch=[]))
    return str(save_agent(model.policy, tmp_path_factory.mktemp("agent") / "tiny", {}))


def test_parallel_equals_serial_and_resume_skips(agent_dir, tmp_path):
    tasks = [Task(agent_dir, 0, e) for e in range(2)]
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
    summary = aggregate(resumed)[agent_dir]
    assert summary["episodes"] == 2 and set(summary["active_percent"]) == {"conv1", "conv2", "conv3", "fc1"}


def test_confidence_interval():
    low, high = confidence_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 4.303 / 3 ** 0.5) and high == pytest.approx(2 + 4.303 / 3 ** 0.5)


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


def test_spearman_and_randomised_copy():
    a = torch.arange(10.0)[None]
    assert float(f.spearman(a, a)) == pytest.approx(1.0)
    assert float(f.spearman(a, -a)) == pytest.approx(-1.0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    copy = f.randomised_copy(net, layers=2)
    assert torch.equal(copy[0].weight, net[0].weight) and not torch.equal(copy[4].weight, net[4].weight)


def test_evaluate_methods_report():
    net, x, _, _ = toy_problem(n=8)
    report = f.evaluate_methods(net, x, ["gradient", "insens"], progress=False)
    assert set(report) == {"gradient", "insens"}
    assert "| gradient |" in f.markdown_table(report)
