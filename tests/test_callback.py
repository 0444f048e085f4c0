"""The training callback: a tiny PPO on fake frames, inspected in Pong, leaves clips and scalars."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

import rl_insens as ri
from rl_insens.train import callback as callback_module

EVERY, TOTAL, CLIP = 64, 192, 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fake_atari):
    """PPO on fake 6-action frames for a few hundred steps, inspected every 64 steps in Pong."""
    folder = tmp_path_factory.mktemp("training")
    model = PPO("CnnPolicy", fake_atari(6), n_steps=32, batch_size=32, n_epochs=1, seed=0)
    model.set_logger(configure(str(folder / "log"), ["json"]))
    inspector = ri.InsensCallback("PongNoFrameskip-v4", every=EVERY, steps=CLIP,
                                  methods=("insens", "gradient"), out_dir=folder / "clips")
    model.learn(TOTAL, callback=inspector)
    return folder, inspector


@pytest.mark.slow
def test_a_clip_per_point_named_by_its_step(trained):
    folder, inspector = trained
    steps = [p["step"] for p in inspector.points]
    assert steps == [0, 64, 128, 192]
    for step in steps:
        video = folder / "clips" / f"step_{step:010d}.mp4"
        frames = list(iio.imiter(video))
        assert len(frames) == CLIP and frames[0].shape[1] == 160 * ri.render.PANEL_ZOOM * 3
        assert video.with_suffix(".png").exists() and (video.with_suffix(".run") / "run.json").exists()
    lines = [json.loads(line) for line in (folder / "clips" / "inspections.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == steps


@pytest.mark.slow
def test_scalars_reach_the_logger(trained):
    folder, _ = trained
    rows = [json.loads(line) for line in (folder / "log" / "progress.json").read_text().splitlines()]
    rows = [r for r in rows if "insens/greedy_return" in r]
    assert len(rows) == 4
    for row in rows:
        layers = [k for k in row if k.startswith("insens/active_percent/")]
        assert len(layers) == 4 and all(0 <= row[k] <= 100 for k in layers)  # NatureCNN: 3 convs, 1 linear
        assert row["insens/stability_margin_median"] > 0
        assert row["insens/neurons_switched_per_step"] >= 0
        assert np.isfinite(row["insens/greedy_return"])
        assert 0 <= row["insens/object_mass/insens"] <= 1 and 0 <= row["insens/object_mass/gradient"] <= 1
    # Learning changed the policy between points; the clips show it.
    assert len({r["insens/stability_margin_median"] for r in rows}) > 1


@pytest.mark.slow
def test_the_numbers_are_those_of_the_clip(trained):
    from rl_insens.clipstats import clip_statistics

    folder, inspector = trained
    point = inspector.points[-1]
    again = clip_statistics(point["run_dir"])  # the agent read back from the run directory
    for key, value in again.items():
        assert value == pytest.approx(point[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_says_once_when_it_cannot_log_a_video(trained, monkeypatch, capsys):
    _, inspector = trained
    monkeypatch.setattr(callback_module, "tensorboard_video_missing", lambda: "tensorboard is not installed")
    inspector.warned = False
    inspector._log_video(None)
    inspector._log_video(None)
    err = capsys.readouterr().err
    assert err.count("not logged to TensorBoard") == 1 and "rl-insens[tensorboard]" in err


@pytest.mark.slow
def test_clip_reaches_tensorboard_when_it_can(tmp_path, fake_atari):
    if callback_module.tensorboard_video_missing():
        pytest.skip(callback_module.tensorboard_video_missing())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = PPO("CnnPolicy", fake_atari(6), n_steps=32, batch_size=32, n_epochs=1, seed=0,
                tensorboard_log=str(tmp_path / "tb"))
    inspector = ri.InsensCallback("PongNoFrameskip-v4", every=32, steps=4, methods=("gradient",),
                                  out_dir=tmp_path / "clips", at_start=False)
    model.learn(32, callback=inspector, tb_log_name="run")
    events = EventAccumulator(str(next((tmp_path / "tb").iterdir()))).Reload()
    assert "insens/clip" in events.Tags()["images"]
    assert "insens/greedy_return" in events.Tags()["scalars"]


def test_settings_are_checked_at_once(tmp_path):
    with pytest.raises(ValueError, match="unknown attribution method"):
        ri.InsensCallback("PongNoFrameskip-v4", methods=("lime",))
    with pytest.raises(ValueError, match="crf must be"):
        ri.InsensCallback("PongNoFrameskip-v4", crf=99)
    with pytest.raises(ValueError, match="every, steps and episodes"):
        ri.InsensCallback("PongNoFrameskip-v4", every=0)


@pytest.mark.slow
def test_train_command_inspects_as_it_learns(tmp_path):
    from click.testing import CliRunner

    from rl_insens.cli import main as cli

    run = tmp_path / "run"
    args = ["train", "--out-dir", str(run), "--total-steps", "10000", "--stop-at", "64", "--n-envs", "1",
            "--n-steps", "32", "--batch-size", "32", "--dummy-envs", "--inspect-every", "32",
            "--inspect-steps", "3", "--inspect-methods", "gradient"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    log = run / "inspections" / "inspections.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 32, 64]
    assert all(len(list(iio.imiter(line["video"]))) == 3 for line in lines)
    assert {"insens/greedy_return", "insens/object_mass/gradient"} <= {f"insens/{k}" for k in lines[0]}
    bad = CliRunner().invoke(cli, [*args[:-1], "lime"])
    assert bad.exit_code == 2 and "unknown attribution method" in bad.output
