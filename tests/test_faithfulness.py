"""The literature's faithfulness checks, each on a small case whose answer is known."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import rl_insens.faithfulness as f
from rl_insens.cli import main as cli
from rl_insens.envs import make_pong_env
from rl_insens.interventions import Move, intervene
from rl_insens.objects import OBJECTS


def test_a_map_that_is_the_object_mask_gets_all_the_mass_and_every_point():
    masks = np.zeros((3, 84, 84), bool)
    masks[:, 10:14, 20:22] = True
    exact = f.object_saliency(masks.astype(float), masks)
    assert np.allclose(exact["mass"], 1.0) and exact["pointing"].tolist() == [1.0, 1.0, 1.0]
    uniform = f.object_saliency(np.ones((3, 84, 84)), masks)
    assert np.allclose(uniform["mass"], uniform["area"]) and np.allclose(uniform["area"], 8 / 84 ** 2)


def test_similarity_is_one_for_the_same_map_either_sign_and_low_for_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 32, 32))
    for b in (a, -a, 3 * a):
        assert all(v == pytest.approx(1.0) for v in f.similarity(a, b).values())
    noise = f.similarity(a, rng.normal(size=(2, 32, 32)))
    assert noise["spearman"] < 0.1 and noise["ssim"] < 0.2 and noise["hog_pearson"] < 0.5


def test_insens_ignores_the_output_layer_so_its_first_cascading_step_changes_nothing():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 8), nn.ReLU(),
                        nn.Linear(8, 3))
    x = torch.rand(3, 1, 32, 32)
    maps = f.checks.method_maps(net, x, "insens")
    report = f.cascading_randomisation(net, x, "insens", maps)
    assert report["layers"] == ["5", "3", "0"]
    first, last = report["steps"][0], report["steps"][-1]
    assert all(first[m]["mean"] == pytest.approx(1.0, abs=1e-6) for m in ("spearman", "ssim", "hog_pearson"))
    assert last["spearman"]["mean"] < 0.9  # every layer random: the map has changed
    gradient = f.cascading_randomisation(net, x, "gradient", f.checks.method_maps(net, x, "gradient"))
    assert gradient["steps"][0]["spearman"]["mean"] < 0.99  # the gradient does depend on the output layer


def test_randomised_copy_keeps_lower_layers_and_global_random_state():
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    state = torch.random.get_rng_state()
    copy = f.randomised_copy(net, layers=2, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(copy[0].weight, net[0].weight)
    assert not torch.equal(copy[2].weight, net[2].weight) and not torch.equal(copy[4].weight, net[4].weight)
    assert torch.equal(f.randomised_copy(net, 2, seed=1)[4].weight, copy[4].weight)  # reproducible


def test_a_perfect_ranking_beats_a_random_one_on_both_substrates():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16 * 16, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0] = 1.0
        net[0].bias.zero_()
        net[3].weight.zero_()
        net[3].weight[0, :16 * 16].view(16, 16)[4:8, 4:8] = 1.0  # class 0: the bright square
        net[3].bias.copy_(torch.tensor([0.0, 4.0]))
    x = torch.zeros(8, 1, 16, 16)
    x[:, :, 4:8, 4:8] = 1.0
    perfect = torch.zeros_like(x)
    perfect[:, :, 4:8, 4:8] = 1.0
    for base in f.SUBSTRATES:
        good = f.deletion_insertion(net, x, perfect, base=base)
        bad = f.deletion_insertion(net, x, f.metrics.random_maps(tuple(x.shape)), base=base)
        assert good["auc_insertion_logit"] > bad["auc_insertion_logit"]
        assert good["auc_deletion_logit"] <= bad["auc_deletion_logit"]
        low, high = good["auc_insertion_logit_ci95"]
        assert low <= good["auc_insertion_logit"] <= high


def test_an_intervention_on_the_balls_ram_moves_the_balls_pixels():
    env = make_pong_env(max_episode_steps=None)
    env.reset(seed=0)
    for _ in range(80):  # the ball is in play (at 60 steps a point has just been scored)
        env.step(0)
    ball = OBJECTS["Pong"][0]
    outcome = intervene(env, "Pong", [Move("ball", "x", 10)])
    assert outcome.moved
    before, after = np.nonzero(ball.pixels(outcome.screen)), np.nonzero(ball.pixels(outcome.edited_screen))
    assert after[1].mean() - before[1].mean() == pytest.approx(10, abs=2)
    assert not np.array_equal(outcome.observation, outcome.edited_observation)
    untouched = intervene(env, "Pong", [])
    assert np.array_equal(untouched.observation, outcome.observation)  # the state was put back


def test_inspector_intervene_reports_the_policy_change(pong_agent):
    from rl_insens import Inspector

    ins = Inspector(pong_agent(0), seed=0, methods=("gradient",))
    ins.step(80, action=0)
    before = ins.frame.observation.copy()
    result = ins.intervene(ball=(0, 12))
    assert result.moved and result.logit_change > 0 and np.array_equal(ins.frame.observation, before)
    paddle = ins.intervene(player=-10)  # Pong rewrites its paddles from the controller every frame
    assert not paddle.moved and paddle.logit_change == 0 and paddle.moves[0].axis == "y"
    with pytest.raises(ValueError, match="no object 'paddle'"):
        ins.intervene(paddle=3)


@pytest.mark.slow
def test_faithfulness_command_runs_every_check(tmp_path, rlnet_agent_dir):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["faithfulness", "--agent", rlnet_agent_dir, "--frames", "3",
                                      "--methods", "gradient,insens", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "faithfulness.json").read_text())
    assert set(report["methods"]) == {"gradient", "insens", "random"}
    insens = report["methods"]["insens"]
    assert {"noise_agreement", "curves", "cascading", "objects", "interventions"} <= set(insens)
    assert set(insens["curves"]) == set(f.SUBSTRATES) and "all objects" in insens["objects"]
    table = (out / "faithfulness.md").read_text()
    for heading in ("blurred substrate", "Cascading randomisation", "Object saliency", "Interventions"):
        assert heading in table
    assert (out / "cascading.png").exists() and (out / "faithfulness.png").exists()
    bad = CliRunner().invoke(cli, ["faithfulness", "--agent", rlnet_agent_dir, "--checks", "vibes",
                                   "--out-dir", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown check" in bad.output and not (tmp_path / "x").exists()
