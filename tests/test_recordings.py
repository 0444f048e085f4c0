"""Many recordings at once: one video and run directory per episode, the same on every backend,
resumable."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner

from rl_insens.cli import main as cli
from rl_insens.recordings import MANIFEST, record_episodes

SETTINGS = dict(max_steps=4, methods=("gradient",), batch=2, progress=False)


@pytest.fixture(scope="module")
def serial(rlnet_agent_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serial") / "many"
    record_episodes(rlnet_agent_dir, folder, 2, seed=5, **SETTINGS)
    return folder


def files_of(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def assert_same_recordings(a, b):
    """The same files; equal run data and weights; videos alike up to the caption's compute times.
    (``torch.save`` gives other bytes for equal tensors, so the weights file's hash differs.)"""
    import torch

    assert files_of(a) == files_of(b)
    for name in files_of(a):
        if name.endswith(".npz"):
            with np.load(a / name) as x, np.load(b / name) as y:
                assert sorted(x.files) == sorted(y.files)
                for key in x.files:
                    assert np.array_equal(x[key], y[key], equal_nan=True), (name, key)
        elif name.endswith("agent.json"):
            x, y = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            assert {**x, "weights_sha256": None} == {**y, "weights_sha256": None}
        elif name.endswith(".json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        elif name.endswith(".weights"):
            x, y = (torch.load(folder / name, weights_only=True) for folder in (a, b))
            assert all(torch.equal(x[net][k], y[net][k]) for net in x for k in x[net])
        elif name.endswith(".mp4"):
            x, y = list(iio.imiter(a / name)), list(iio.imiter(b / name))
            assert len(x) == len(y)
            assert all(np.abs(f.astype(int) - g).mean() < 1 for f, g in zip(x, y, strict=True))


def test_one_video_and_run_directory_per_episode(serial):
    assert files_of(serial).count("episode_0000.mp4") == 1 and (serial / "episode_0001.png").exists()
    for episode in (0, 1):
        run = serial / f"episode_{episode:04d}.run"
        meta = json.loads((run / "run.json").read_text())
        assert meta["complete"] and meta["steps"] == 4
        assert meta["seed"] == 5 and meta["first_episode"] == episode
        assert np.load(run / "steps.npz")["episode"].tolist() == [episode] * 4
        assert len(list(iio.imiter(serial / f"episode_{episode:04d}.mp4"))) == 4
    assert json.loads((serial / MANIFEST).read_text())["conditions"]["max_steps"] == 4


@pytest.mark.slow
def test_worker_processes_give_the_same_files(rlnet_agent_dir, serial, tmp_path):
    record_episodes(rlnet_agent_dir, tmp_path / "many", 2, seed=5, workers=2, **SETTINGS)
    assert_same_recordings(serial, tmp_path / "many")


@pytest.mark.slow
def test_ray_gives_the_same_files(rlnet_agent_dir, serial, tmp_path):
    pytest.importorskip("ray")
    record_episodes(rlnet_agent_dir, tmp_path / "many", 2, seed=5, workers=2, backend="ray", **SETTINGS)
    assert_same_recordings(serial, tmp_path / "many")


@pytest.mark.slow
def test_resume_skips_finished_episodes(rlnet_agent_dir, tmp_path):
    folder = tmp_path / "many"
    record_episodes(rlnet_agent_dir, folder, 2, **SETTINGS)
    (folder / "episode_0001.mp4").unlink()  # as if stopped before its video was saved
    finished = (folder / "episode_0000.mp4").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--resume"):
        record_episodes(rlnet_agent_dir, folder, 2, **SETTINGS)
    with pytest.raises(ValueError, match="other settings.*max_steps"):
        record_episodes(rlnet_agent_dir, folder, 2, resume=True, **{**SETTINGS, "max_steps": 5})
    record_episodes(rlnet_agent_dir, folder, 3, resume=True, **SETTINGS)
    assert (folder / "episode_0000.mp4").stat().st_mtime_ns == finished  # not recorded again
    assert all((folder / f"episode_{e:04d}.mp4").exists() for e in (1, 2))


@pytest.mark.slow
def test_record_command_with_several_episodes(rlnet_agent_dir, tmp_path):
    out = tmp_path / "pong.gif"
    args = ["record", "--agent", rlnet_agent_dir, "--episodes", "2", "--max-steps", "3",
            "--methods", "gradient", "--workers", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert len(iio.imread(tmp_path / "pong" / "episode_0001.gif")) == 3
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--resume" in again.output
    assert CliRunner().invoke(cli, [*args, "--resume"]).exit_code == 0
