"""Loading agents: ours and stable-baselines3 zips of each supported kind, and their errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO

import rl_insens as ri
from rl_insens.agents import load_agent, save_agent
from rl_insens.envs import PONG


def sb3_scores(model, obs):
    """SB3's own action scores: probabilities (actor-critic) or Q-values."""
    policy = model.policy
    tensor, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        if hasattr(policy, "get_distribution"):
            return policy.get_distribution(tensor).distribution.probs
        if hasattr(policy, "quantile_net"):
            return policy.quantile_net(tensor).mean(1)
        return policy.q_net(tensor)


def agent_scores(agent, obs):
    with torch.no_grad():
        scores = agent.network(agent.preprocess(obs))
    return scores.softmax(1) if agent.kind == "actor-critic" else scores


def make_models(fake_atari, sb3_rlnet):
    env = fake_atari()
    models = {
        "ppo": lambda: PPO("CnnPolicy", env, n_steps=16, seed=0),
        "a2c": lambda: A2C("CnnPolicy", env, n_steps=4, seed=0),
        "dqn": lambda: DQN("CnnPolicy", env, buffer_size=100, learning_starts=10, seed=0),
        "ppo_rlnet": lambda: sb3_rlnet(0),
    }
    try:
        from sb3_contrib import QRDQN

        models["qrdqn"] = lambda: QRDQN("CnnPolicy", env, buffer_size=100, learning_starts=10, seed=0)
    except ImportError:
        pass
    return models


@pytest.mark.parametrize("kind", ["ppo", "a2c", "dqn", "qrdqn", "ppo_rlnet"])
def test_sb3_zip_gives_sb3s_outputs_and_actions(kind, tmp_path, fake_atari, sb3_rlnet, observations):
    models = make_models(fake_atari, sb3_rlnet)
    if kind not in models:
        pytest.skip("sb3-contrib is not installed")
    model = models[kind]()
    model.save(tmp_path / "agent.zip")
    agent = load_agent(tmp_path / "agent.zip")
    obs = observations()
    assert torch.allclose(agent_scores(agent, obs), sb3_scores(model, obs), atol=1e-5)
    actions, _ = model.predict(obs, deterministic=True)
    assert [agent.act(o) for o in obs] == list(actions)
    ri.engine.read_chain(agent.network, (4, 84, 84))  # the engine accepts it
    assert len(agent.action_meanings) == model.action_space.n


def test_rl_insens_agent_directory_round_trip(tmp_path, sb3_rlnet, observations):
    model = sb3_rlnet(0)
    save_agent(model.policy, tmp_path / "agent", {"note": "untrained", "environment": PONG.as_dict()})
    agent = load_agent(tmp_path / "agent")
    assert agent.settings == PONG
    assert isinstance(agent.network, ri.RLNet)
    obs = observations()
    assert torch.allclose(agent_scores(agent, obs), sb3_scores(model, obs), atol=1e-5)
    tensor, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        value = model.policy.predict_values(tensor)
        assert torch.allclose(agent.value_network(agent.preprocess(obs)), value, atol=1e-5)
    weights = tmp_path / "agent" / agent.card["weights_file"]
    assert agent.card["weights_sha256"] == ri.agents.sha256_of(weights)
    assert agent.action_meanings[:3] == ["NOOP", "FIRE", "UP"]


def test_tampered_weights_are_refused(tmp_path, sb3_rlnet):
    save_agent(sb3_rlnet(0).policy, tmp_path / "agent", {})
    weights = tmp_path / "agent" / json.loads((tmp_path / "agent" / "card.json").read_text())["weights_file"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its model card"):
        load_agent(tmp_path / "agent")


def test_missing_and_corrupt_agents(tmp_path):
    with pytest.raises(FileNotFoundError, match="no agent at"):
        load_agent(tmp_path / "nothing.zip")
    (tmp_path / "broken.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a readable stable-baselines3 agent"):
        load_agent(tmp_path / "broken.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="card.json"):
        load_agent(tmp_path / "empty")


def test_non_atari_agent_is_refused(tmp_path):
    PPO("MlpPolicy", "CartPole-v1", n_steps=16).save(tmp_path / "cartpole.zip")
    with pytest.raises(ValueError, match="not an Atari agent"):
        load_agent(tmp_path / "cartpole.zip")


def test_non_relu_agent_is_refused(tmp_path, fake_atari):
    model = PPO("CnnPolicy", fake_atari(), n_steps=16, policy_kwargs=dict(net_arch=[32]))  # Tanh MLP
    model.save(tmp_path / "tanh.zip")
    with pytest.raises(ri.UnsupportedModelError, match="Tanh"):
        load_agent(tmp_path / "tanh.zip")


def test_observation_that_does_not_fit(tmp_path):
    agent = ri.agents.Agent(ri.RLNet().eval(), ["a"] * 18, "actor-critic")
    with pytest.raises(ValueError, match="does not fit this agent"):
        agent.act(np.zeros((4, 80, 80), np.uint8))


@pytest.mark.slow
def test_training_smoke_run_checkpoints_and_resumes(tmp_path):
    from rl_insens.train import TrainConfig, plot_learning_curve, train

    cfg = TrainConfig(out_dir=str(tmp_path / "run"), total_steps=10_000, stop_at=128, n_envs=2, n_steps=32,
                      batch_size=32, checkpoint_every=64, subprocess_envs=False)
    first = train(cfg)
    assert first.num_timesteps >= 128 and cfg.resume_path.exists()
    cfg.stop_at, cfg.sticky_envs = 256, 1
    second = train(cfg, resume=True)
    assert second.num_timesteps >= 256
    assert json.loads((tmp_path / "run" / "config.json").read_text())["sticky_envs"] == 1
    sticky = [env.unwrapped.ale.getFloat("repeat_action_probability") for env in second.get_env().envs]
    assert sticky == [0.25, 0.0]
    assert (tmp_path / "run" / "learning_curve.png").exists()
    assert (tmp_path / "run" / "episodes.csv").read_text().startswith("step,return,length,wall_time")
    plot_learning_curve(tmp_path / "run" / "episodes.csv", tmp_path / "curve.png")


def test_training_wall_time_skips_pauses_and_stops_at_a_step(tmp_path):
    from rl_insens.train import training_wall_time

    log = tmp_path / "episodes.csv"
    log.write_text("step,return,length,wall_time\n100,0,1,0\n200,0,1,10\n300,0,1,2000\n400,0,1,2030\n")
    assert training_wall_time(log) == 40  # the 1990 s gap is a pause between sessions
    assert training_wall_time(log, up_to_step=300) == 10


@pytest.mark.slow
def test_export_agent_writes_a_loadable_agent_with_its_card(tmp_path):
    from rl_insens.train import TrainConfig, export_agent, train, validate_checkpoint

    settings = {**ri.envs.PONG.as_dict(), "max_episode_steps": 50, "noop_max": 3}
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), total_steps=10_000, stop_at=64, n_envs=2, n_steps=32,
                      batch_size=32, checkpoint_every=64, subprocess_envs=False, env_settings=settings)
    trained = train(cfg)
    earlier = tmp_path / "earlier.zip"
    earlier.write_bytes(cfg.resume_path.read_bytes())
    train(dataclasses.replace(cfg, stop_at=128), resume=True)
    card = export_agent(cfg, tmp_path / "agent", eval_episodes=2, note="schedule extended at 32 steps",
                        checkpoint=earlier)
    agent = ri.load_agent(tmp_path / "agent")
    saved = json.loads((tmp_path / "agent" / "card.json").read_text())
    assert saved["steps_trained"] == trained.num_timesteps and saved["training_note"] == card["training_note"]
    assert saved["evaluation"]["training_setting"]["seeds"] == [1000, 1001]
    assert (tmp_path / "agent" / "learning_curve.png").exists()
    assert saved["evaluation"]["sticky_actions_0.25"]["episodes"] == 2
    every_start = saved["evaluation"]["training_setting_every_noop_start"]
    assert every_start["episodes"] == 3 and every_start["unfinished"] == 3  # all cut at 50 steps
    obs = np.random.default_rng(0).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    expected = trained.policy.predict(obs, deterministic=True)[0]
    assert agent.act(obs) == int(expected)
    validate_checkpoint(cfg, first_seed=2000, episodes=1)
    validate_checkpoint(cfg, first_seed=3000, episodes=1, max_steps=10, checkpoint=earlier)
    log = [json.loads(line) for line in (tmp_path / "run" / "validation.jsonl").read_text().splitlines()]
    assert [r["training_setting"]["seeds"] for r in log] == [[2000], [3000]]
    assert [r["steps"] for r in log] == [128, trained.num_timesteps]
    assert log[1]["training_setting_every_noop_start"]["lengths"] == [10, 10, 10]
    assert log[0]["sticky_actions_0.25"]["episodes"] == 1


@pytest.mark.slow
def test_sigterm_stops_training_with_a_checkpoint_and_no_hang(tmp_path):
    """With environments in worker processes, as the real training runs. The signal comes once the
    first checkpoint (64 steps) is on disk, so inside ``learn`` with the workers stepping; the
    checkpoint left at the end is the one the interruption wrote, further on."""
    import re
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    code = ("from rl_insens.train import TrainConfig, train; "
            f"train(TrainConfig(out_dir={str(out)!r}, total_steps=10**6, n_envs=2, n_steps=32, "
            "batch_size=32, checkpoint_every=64, subprocess_envs=True))")
    trainer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (out / "resume.zip").exists() and time.monotonic() < deadline and trainer.poll() is None:
            time.sleep(0.05)
        if not (out / "resume.zip").exists():
            pytest.fail("no first checkpoint: " + trainer.communicate(timeout=60)[0].decode()[-2000:])
        first = PPO.load(out / "resume.zip", device="cpu").num_timesteps
        trainer.send_signal(signal.SIGTERM)
        output = trainer.communicate(timeout=60)[0].decode()
    finally:
        trainer.kill()
    saved = re.search(r"interrupted: checkpoint saved at (\d+) steps", output)
    assert saved, output[-2000:]
    assert PPO.load(out / "resume.zip", device="cpu").num_timesteps == int(saved[1]) > first >= 64


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_train_on_cuda_without_cuda_is_refused(tmp_path):
    from click.testing import CliRunner

    from rl_insens.cli import main as cli

    result = CliRunner().invoke(cli, ["train", "--device", "cuda", "--out-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "no CUDA device" in result.output
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


@pytest.mark.slow
def test_train_command_resumes_with_the_runs_own_settings(tmp_path):
    """Options left unset on --resume keep the run's values (a new --n-envs would not fit it)."""
    from click.testing import CliRunner

    from rl_insens.cli import main as cli

    run = str(tmp_path / "run")
    tiny = ["--n-envs", "2", "--n-steps", "32", "--batch-size", "32", "--checkpoint-every", "64",
            "--total-steps", "10000", "--sticky-envs", "1"]
    first = CliRunner().invoke(cli, ["train", "--out-dir", run, "--stop-at", "64", "--dummy-envs", *tiny])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(cli, ["train", "--out-dir", run, "--stop-at", "128", "--dummy-envs",
                                      "--resume"])
    assert second.exit_code == 0, second.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["n_envs"], saved["n_steps"], saved["batch_size"], saved["sticky_envs"]) == (2, 32, 32, 1)
    assert saved["checkpoint_every"] == 64 and saved["stop_at"] == 128 and saved["subprocess_envs"] is False


def test_train_settings_come_from_the_options_else_the_resumed_run_else_the_defaults(tmp_path):
    from rl_insens.train import TrainConfig

    saved = TrainConfig(out_dir="elsewhere", seed=5, n_envs=2, n_epochs=9, stop_at=64, subprocess_envs=False)
    (tmp_path / "config.json").write_text(json.dumps({**dataclasses.asdict(saved), "retired_setting": 1}))
    cfg = TrainConfig.for_run(tmp_path, resume=True, n_envs=4, seed=None)
    assert (cfg.out_dir, cfg.n_envs, cfg.seed, cfg.n_epochs) == (str(tmp_path), 4, 5, 9)
    assert cfg.stop_at is None and cfg.subprocess_envs  # settings of one invocation are not resumed
    assert TrainConfig.for_run(tmp_path, seed=None) == TrainConfig(out_dir=str(tmp_path))  # a new run
    with pytest.raises(ValueError, match=f"plays {PONG.env_id}"):
        TrainConfig.for_run(tmp_path, resume=True, env_id="ALE/Breakout-v5")
    breakout = TrainConfig.for_run(tmp_path / "new", env_id="ALE/Breakout-v5")
    assert breakout.settings.env_id == "ALE/Breakout-v5" and not breakout.settings.full_action_space
