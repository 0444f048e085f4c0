"""Bring your own agent: SB3 zips in zoo folders, CleanRL checkpoints, each set to its own game."""

import base64
import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from stable_baselines3 import PPO
from torch import nn

from rl_insens.agents import load_agent
from rl_insens.cli import main as cli
from rl_insens.envs import GameError


@pytest.fixture
def zoo_run(fake_atari):
    """The folder rl-baselines3-zoo writes: ``<env>_1/<env>.zip`` and ``<env>_1/<env>/*.yml``."""

    def make(root: Path, env_id: str = "PongNoFrameskip-v4", n_actions: int = 6, wrapper=None) -> Path:
        run = root / "ppo" / f"{env_id}_1"
        (run / env_id).mkdir(parents=True)
        PPO("CnnPolicy", fake_atari(n_actions), n_steps=16, seed=0).save(run / f"{env_id}.zip")
        args = OrderedDict([("algo", "ppo"), ("env", env_id), ("seed", 0)])
        wrapper = wrapper or ["stable_baselines3.common.atari_wrappers.AtariWrapper"]
        config = OrderedDict([("env_wrapper", wrapper), ("frame_stack", 4), ("policy", "CnnPolicy")])
        (run / env_id / "args.yml").write_text(yaml.dump(args))  # the zoo dumps OrderedDicts, tags and all
        (run / env_id / "config.yml").write_text(yaml.dump(config))
        (run / env_id / "env_kwargs.yml").write_text(yaml.dump(OrderedDict()))
        return run / f"{env_id}.zip"

    return make


def test_zoo_folder_names_the_game_and_its_action_set(tmp_path, zoo_run):
    path = zoo_run(tmp_path)
    agent = load_agent(path)
    assert agent.game.env_id == "PongNoFrameskip-v4" and agent.game.preprocessing == "sb3"
    assert not agent.game.full_action_space
    assert agent.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert agent.make_env().action_space.n == 6


def test_zoo_wrapper_arguments_are_read(tmp_path, zoo_run):
    wrapper = [{"stable_baselines3.common.atari_wrappers.AtariWrapper": {"noop_max": 7,
                                                                         "terminal_on_life_loss": True}}]
    agent = load_agent(zoo_run(tmp_path, wrapper=wrapper))
    assert agent.game.noop_max == 7 and not agent.game.terminal_on_life_loss  # whole games unless asked


def test_the_users_env_comes_first_and_must_fit(tmp_path, zoo_run):
    path = zoo_run(tmp_path)
    assert load_agent(path, env="ALE/Pong-v5").game.env_id == "ALE/Pong-v5"
    with pytest.raises(GameError, match="has 6 actions, but BreakoutNoFrameskip-v4 has 4"):
        load_agent(path, env="BreakoutNoFrameskip-v4")


def test_a_lone_zip_has_no_game_until_told(tmp_path, fake_atari):
    PPO("CnnPolicy", fake_atari(4), n_steps=16).save(tmp_path / "agent.zip")
    agent = load_agent(tmp_path / "agent.zip")
    with pytest.raises(GameError, match="--env"):
        agent.make_env()
    assert load_agent(tmp_path / "agent.zip", env="ALE/Breakout-v5").action_meanings[1] == "FIRE"
    PPO("CnnPolicy", fake_atari(4), n_steps=16).save(tmp_path / "BreakoutNoFrameskip-v4.zip")
    assert load_agent(tmp_path / "BreakoutNoFrameskip-v4.zip").game.env_id == "BreakoutNoFrameskip-v4"


def test_unreadable_zoo_yaml_is_one_clear_line(tmp_path, zoo_run):
    path = zoo_run(tmp_path)
    (path.parent / "PongNoFrameskip-v4" / "config.yml").write_text("env_wrapper: [unclosed\n")
    with pytest.raises(GameError, match="config.yml is not readable YAML"):
        load_agent(path)
    assert load_agent(path, env="PongNoFrameskip-v4").n_actions == 6  # --env needs no zoo files


class Payload:
    """What a malicious zip could carry: unpickling it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_in_a_zip_is_never_run(tmp_path, fake_atari, observations):
    model = PPO("CnnPolicy", fake_atari(6), n_steps=16, seed=0)
    model.save(tmp_path / "clean.zip")
    marker = tmp_path / "ran"
    payload = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    with zipfile.ZipFile(tmp_path / "clean.zip") as source, \
            zipfile.ZipFile(tmp_path / "crafted.zip", "w") as crafted:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "data":
                fields = json.loads(data)
                for value in fields.values():
                    if isinstance(value, dict) and ":serialized:" in value:
                        value[":serialized:"] = payload
                data = json.dumps(fields).encode()
            crafted.writestr(item, data)
    agent = load_agent(tmp_path / "crafted.zip", env="PongNoFrameskip-v4")
    assert not marker.exists()
    obs = observations()
    assert [agent.act(o) for o in obs] == list(model.predict(obs, deterministic=True)[0])


# ----- CleanRL ---------------------------------------------------------------------------------------
def cleanrl_trunk() -> nn.Sequential:
    """``ppo_atari.py``'s ``Agent.network`` (and ``dqn_atari.py``'s ``QNetwork.network`` without its head)."""
    return nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 7 * 7, 512),
                         nn.ReLU())


class CleanRLPPOAgent(nn.Module):
    """CleanRL's PPO agent, with its forward pass: ``actor(network(x / 255.0))``."""

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.network = cleanrl_trunk()
        self.actor, self.critic = nn.Linear(512, n_actions), nn.Linear(512, 1)

    def logits_and_value(self, x):
        hidden = self.network(x / 255.0)
        return self.actor(hidden), self.critic(hidden)


class CleanRLQNetwork(nn.Module):
    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(*cleanrl_trunk(), nn.Linear(512, n_actions))

    def forward(self, x):
        return self.network(x / 255.0)


def test_cleanrl_ppo_checkpoint_acts_as_cleanrl(tmp_path, observations):
    torch.manual_seed(0)
    theirs = CleanRLPPOAgent(4)
    torch.save(theirs.state_dict(), tmp_path / "ppo_atari.cleanrl_model")
    agent = load_agent(tmp_path / "ppo_atari.cleanrl_model", env="BreakoutNoFrameskip-v4")
    assert agent.game.preprocessing == "cleanrl"
    assert agent.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    obs = observations(8)
    with torch.no_grad():
        logits, value = theirs.logits_and_value(torch.as_tensor(obs).float())
        x = agent.preprocess(obs)
        assert torch.allclose(agent.network(x), logits, atol=1e-5)
        assert torch.allclose(agent.value_network(x), value, atol=1e-5)
    assert [agent.act(o) for o in obs] == logits.argmax(1).tolist()


def test_cleanrl_dqn_checkpoint_acts_as_cleanrl(tmp_path, observations):
    torch.manual_seed(1)
    theirs = CleanRLQNetwork(6)
    torch.save(theirs.state_dict(), tmp_path / "dqn_atari.cleanrl_model")
    agent = load_agent(tmp_path / "dqn_atari.cleanrl_model", env="PongNoFrameskip-v4")
    obs = observations(8)
    with torch.no_grad():
        q = theirs(torch.as_tensor(obs).float())
        assert torch.allclose(agent.network(agent.preprocess(obs)), q, atol=1e-5)
    assert agent.kind == "q-values" and [agent.act(o) for o in obs] == q.argmax(1).tolist()
    with pytest.raises(GameError, match="has 6 actions"):
        load_agent(tmp_path / "dqn_atari.cleanrl_model", env="ALE/Breakout-v5")


def test_cleanrl_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.cleanrl_model").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable CleanRL checkpoint"):
        load_agent(tmp_path / "x.cleanrl_model")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "y.cleanrl_model")
    with pytest.raises(ValueError, match="not a CleanRL Atari checkpoint"):
        load_agent(tmp_path / "y.cleanrl_model")


# ----- the command line ------------------------------------------------------------------------------
def test_evaluate_plays_the_agent_in_its_own_game(tmp_path, zoo_run):
    path = zoo_run(tmp_path)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["evaluate", "--agent", str(path), "--episodes", "1",
                                      "--max-steps", "20", "--json", str(out)])
    assert result.exit_code == 0, result.output
    episode = json.loads(out.read_text())["episodes"][0]
    assert episode["game"] == "PongNoFrameskip-v4" and set(episode["actions"]) <= {
        "NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"}


@pytest.mark.parametrize("command", ["evaluate", "record", "faithfulness"])
def test_a_game_that_does_not_fit_is_one_line_and_writes_nothing(tmp_path, command, zoo_run):
    path = zoo_run(tmp_path)
    out = {"evaluate": ["--json", str(tmp_path / "out" / "e.json")],
           "record": ["--out", str(tmp_path / "out" / "r.mp4")],
           "faithfulness": ["--out-dir", str(tmp_path / "out")]}[command]
    for env, message in (("BreakoutNoFrameskip-v4", "has 6 actions, but BreakoutNoFrameskip-v4 has 4"),
                         ("ALE/Pong-v9", "unknown Atari environment 'ALE/Pong-v9'; did you mean")):
        result = CliRunner().invoke(cli, [command, "--agent", str(path), "--env", env, *out])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


def test_a_zip_without_a_game_asks_for_env(tmp_path, fake_atari):
    PPO("CnnPolicy", fake_atari(6), n_steps=16).save(tmp_path / "agent.zip")
    result = CliRunner().invoke(cli, ["evaluate", "--agent", str(tmp_path / "agent.zip"),
                                      "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 2 and "pass the environment" in result.output and "--env" in result.output
    assert not np.any([p.name.startswith("e.") for p in tmp_path.iterdir()])


def test_record_inspect_and_wrap_another_game(tmp_path):
    """A Breakout agent is recorded, stepped through and wrapped in Breakout, named as such."""
    from rl_insens import InsensWrapper, Inspector, make_env
    from rl_insens.record import record

    torch.manual_seed(2)
    torch.save(CleanRLPPOAgent(4).state_dict(), tmp_path / "breakout.cleanrl_model")
    path = tmp_path / "breakout.cleanrl_model"
    result = record(load_agent(path, env="BreakoutNoFrameskip-v4"), tmp_path / "b.mp4", max_steps=3,
                    methods=["gradient"], progress=False)
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["environment"]["env_id"] == "BreakoutNoFrameskip-v4"
    assert run["environment"]["preprocessing"] == "cleanrl"
    assert run["action_meanings"] == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    inspector = Inspector(str(path), env="BreakoutNoFrameskip-v4", methods=("gradient",))
    assert inspector.step(2).agent.game.game == "Breakout" and inspector.frame.screen.shape == (210, 160, 3)
    with pytest.raises(GameError, match="6 actions; .* has 4 outputs"):
        InsensWrapper(make_env("PongNoFrameskip-v4"), load_agent(path, env="BreakoutNoFrameskip-v4"))


def test_train_another_game_sizes_rlnet_from_its_actions(tmp_path):
    run = tmp_path / "run"
    tiny = ["--n-envs", "2", "--n-steps", "32", "--batch-size", "32", "--checkpoint-every", "64",
            "--total-steps", "10000", "--dummy-envs", "--stop-at", "64"]
    result = CliRunner().invoke(cli, ["train", "--out-dir", str(run), "--env", "ALE/Breakout-v5", *tiny])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["env_settings"]["env_id"] == "ALE/Breakout-v5" and config["env_settings"]["preprocessing"]
    assert PPO.load(run / "resume.zip", device="cpu").action_space.n == 4
    again = CliRunner().invoke(cli, ["train", "--out-dir", str(run), "--env", "ALE/Pong-v5", "--resume",
                                     *tiny])
    assert again.exit_code == 2 and "plays ALE/Breakout-v5" in again.output


def test_record_an_sb3_cnn_agent_with_its_empty_mlp(tmp_path, fake_atari, observations):
    """SB3's CnnPolicy has an empty ``mlp_extractor``: the run directory stores the chain without it."""
    from rl_insens.record import record
    from rl_insens.runs import load_agent as load_run_agent

    PPO("CnnPolicy", fake_atari(4), n_steps=16, seed=0).save(tmp_path / "agent.zip")
    agent = load_agent(tmp_path / "agent.zip", env="BreakoutNoFrameskip-v4")
    result = record(agent, tmp_path / "r.mp4", max_steps=2, methods=["gradient"], progress=False)
    again = load_run_agent(result.run_dir)
    obs = observations(3)
    with torch.no_grad():
        assert torch.equal(again.network(again.preprocess(obs)), agent.network(agent.preprocess(obs)))
    assert again.game.env_id == "BreakoutNoFrameskip-v4"
