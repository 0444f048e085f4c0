"""The wrapper leaves the game alone; the recorder writes playable videos and run data."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner

import rl_insens as ri
import rl_insens.render
from rl_insens.cli import main as cli
from rl_insens.envs import PONG
from rl_insens.record import record
from rl_insens.wrapper import InsensWrapper

FAST_METHODS = ("insens", "gradient", "lrp_epsilon")


@pytest.fixture(scope="module")
def agent(pong_agent):
    return pong_agent(0)


def test_wrapper_keeps_the_trajectory(agent):
    actions = [0, 2, 3, 2, 5, 1, 4, 3]
    plain, wrapped = ri.make_pong_env(), InsensWrapper(ri.make_pong_env(), agent, methods=FAST_METHODS)
    obs_a, _ = plain.reset(seed=3)
    obs_b, info = wrapped.reset(seed=3)
    assert np.array_equal(obs_a, obs_b)
    inspection = info["inspection"]
    assert set(inspection.maps) == set(FAST_METHODS)
    assert all(m.shape == (4, 84, 84) and np.isfinite(m).all() for m in inspection.maps.values())
    assert inspection.action_probs.shape == (18,) and 0 < inspection.active_fraction < 1
    for action in actions:
        a, b = plain.step(action), wrapped.step(action)
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4]
        assert "inspection" in b[4]


def test_wrapper_every_k_steps(agent):
    env = InsensWrapper(ri.make_pong_env(), agent, methods=("gradient",), every=3)
    _, info = env.reset(seed=0)
    with_maps = [bool(info["inspection"].maps)]
    for _ in range(5):
        with_maps.append(bool(env.step(0)[4]["inspection"].maps))
    assert with_maps == [True, False, False, True, False, False]


def test_wrapper_refuses_misfit_environment(agent):
    import gymnasium as gym

    with pytest.raises(ValueError, match="observations have shape"):
        InsensWrapper(gym.make("CartPole-v1"), agent)
    with pytest.raises(ValueError, match="unknown attribution method"):
        InsensWrapper(ri.make_pong_env(), agent, methods=("lime",))


def test_recording_decodes_to_the_expected_frames(agent, tmp_path):
    result = record(agent, tmp_path / "v.mp4", max_steps=6, methods=FAST_METHODS, batch=4, progress=False)
    frames = list(iio.imiter(result.video))
    assert len(frames) == 6
    panel_width = 160 * ri.render.PANEL_ZOOM
    assert frames[0].shape[1] == panel_width * (1 + len(FAST_METHODS))
    assert result.contact_sheet.exists() and not result.interrupted
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["complete"] and run["steps"] == 6 and len(run["chunks"]) == 2
    steps = np.load(result.run_dir / "steps.npz")
    assert steps["logits"].shape == (6, 18) and steps["fresh"].all()
    chunk = np.load(result.run_dir / "chunks" / run["chunks"][0])
    assert chunk["map_insens"].shape == (4, 4, 84, 84) and chunk["screens"].shape == (4, 210, 160, 3)
    assert not list(tmp_path.glob("*partial*"))


def test_stack_layout(agent, tmp_path):
    result = record(agent, tmp_path / "s.mp4", max_steps=2, methods=("insens",), layout="stack",
                    progress=False)
    assert list(iio.imiter(result.video))[0].shape[1] == 160 * ri.render.PANEL_ZOOM * 5


def test_interrupted_recording_leaves_a_playable_video(agent, tmp_path):
    calls = {"n": 0}
    real_act = agent.act

    def act_then_interrupt(obs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_act(obs)

    agent.act = act_then_interrupt
    try:
        result = record(agent, tmp_path / "i.mp4", max_steps=50, methods=("gradient",), batch=2,
                        progress=False)
    finally:
        agent.act = real_act
    assert result.interrupted and result.steps == 4  # the frame not yet attributed is dropped
    assert len(list(iio.imiter(result.video))) == 4
    assert not json.loads((result.run_dir / "run.json").read_text())["complete"]


def test_cli_errors_exit_nonzero(tmp_path, sb3_rlnet):
    runner = CliRunner()
    missing = runner.invoke(cli, ["record", "--agent", str(tmp_path / "none"),
                                  "--out", str(tmp_path / "x.mp4")])
    assert missing.exit_code != 0 and "no agent at" in missing.output
    from rl_insens.agents import save_agent

    policy = sb3_rlnet(0).policy
    save_agent(policy, tmp_path / "nameless", {})
    nameless = runner.invoke(cli, ["record", "--agent", str(tmp_path / "nameless"),
                                   "--out", str(tmp_path / "x.mp4")])
    assert nameless.exit_code != 0 and "--env" in nameless.output and not (tmp_path / "x.run").exists()
    save_agent(policy, tmp_path / "agent", {"environment": PONG.as_dict()})
    unknown = runner.invoke(cli, ["record", "--agent", str(tmp_path / "agent"), "--methods", "lime",
                                  "--out", str(tmp_path / "x.mp4")])
    assert unknown.exit_code != 0 and "unknown attribution method" in unknown.output
    badout = runner.invoke(cli, ["record", "--agent", str(tmp_path / "agent"),
                                 "--out", str(tmp_path / "x.avi")])
    assert badout.exit_code != 0 and ".mp4" in badout.output
    ok = runner.invoke(cli, ["record", "--agent", str(tmp_path / "agent"), "--max-steps", "2",
                             "--methods", "gradient", "--out", str(tmp_path / "ok.mp4")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "ok.mp4").exists()


# ----- video controls ------------------------------------------------------------------------------
def test_one_method_draws_the_map_full_size_beside_the_game(agent, tmp_path):
    from rl_insens.render import SINGLE_ZOOM

    result = record(agent, tmp_path / "one.mp4", max_steps=2, methods=("gradient",), progress=False)
    frame = next(iter(iio.imiter(result.video)))
    assert frame.shape[1] == 160 * SINGLE_ZOOM * 2  # the game and one map, each at the larger zoom


def test_gif_output_and_scale(agent, tmp_path):
    from rl_insens.render import SINGLE_ZOOM

    result = record(agent, tmp_path / "clip.gif", max_steps=3, methods=("gradient",), scale=0.5,
                    progress=False)
    frames = iio.imread(result.video)
    assert result.video.suffix == ".gif" and len(frames) == 3
    assert frames.shape[2] == 160 * SINGLE_ZOOM  # two panels at half size
    assert result.contact_sheet.exists() and (tmp_path / "clip.run" / "run.json").exists()


def test_crf_trades_size_for_quality(agent, tmp_path):
    sizes = {}
    for crf in (10, 40):
        result = record(agent, tmp_path / f"q{crf}.mp4", max_steps=4, methods=("gradient",), crf=crf,
                        progress=False)
        sizes[crf] = result.video.stat().st_size
        assert json.loads((result.run_dir / "run.json").read_text())["crf"] == crf
    assert sizes[40] < sizes[10] / 2


def test_video_settings_are_checked_before_any_work(agent, tmp_path):
    for kwargs, message in (({"crf": 52}, "crf must be between"), ({"scale": 0}, "scale must be above 0"),
                            ({"out": tmp_path / "x.avi"}, r"\.mp4 or a \.gif")):
        with pytest.raises(ValueError, match=message):
            record(agent, kwargs.pop("out", tmp_path / "x.mp4"), max_steps=2, methods=("gradient",),
                   progress=False, **kwargs)
    assert not list(tmp_path.iterdir())
    bad = CliRunner().invoke(cli, ["record", "--crf", "60", "--out", str(tmp_path / "x.mp4")])
    assert bad.exit_code == 2 and "60 is not in the range 0<=x<=51" in bad.output


def test_frame_sample_spreads_over_the_whole_stream():
    from rl_insens.video import FrameSample

    sample = FrameSample(6, width=8)
    for i in range(1001):
        sample.offer(np.full((4, 8, 3), i % 256, np.uint8))
        assert len(sample.kept) <= 12  # bounded memory, however long the stream
    picked = [i for i, _ in sample.pick()]
    assert picked[0] == 0 and picked[-1] == 1000 and len(picked) == 6
    assert max(np.diff(picked)) < 2 * 1000 / 5  # spread, not bunched at the start
    assert all(frame[0, 0, 0] == i % 256 for i, frame in sample.pick())


def test_long_recordings_get_a_two_column_contact_sheet(tmp_path):
    import cv2

    from rl_insens.record import LONG_CONTACT_FRAMES, LONG_RECORDING, write_contact_sheet
    from rl_insens.video import FrameSample

    sample = FrameSample(LONG_CONTACT_FRAMES, width=100)
    for i in range(LONG_RECORDING + 1):
        sample.offer(np.full((50, 200, 3), i % 256, np.uint8))
    write_contact_sheet(sample, tmp_path / "sheet.png")
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape[:2] == (25 * LONG_CONTACT_FRAMES // 2, 200)


def test_inspect_play_chunks_steps_and_carries_maps_between_fresh_steps(agent, observations):
    """Chunks of ``batch`` steps, cut at an episode's end; maps on every ``every``-th step counted
    over the whole play, the steps between carrying the last fresh maps."""
    from rl_insens.inspection import inspect_play
    from rl_insens.rollout import Step

    frames = observations(9, seed=1)
    ends = {4, 8}  # two episodes: 5 steps, then 4
    steps = [Step(0 if t <= 4 else 1, t, frames[t], 0, 0.0, 0.0, t in ends, False) for t in range(9)]
    chunks = list(inspect_play(agent, steps, ("gradient",), batch=3, every=2))
    assert [len(c) for c in chunks] == [3, 2, 3, 1]  # the first episode's end cuts its second chunk
    found = [f for chunk in chunks for f in chunk]
    assert [f.step.t for f in found] == list(range(9))
    assert [f.fresh for f in found] == [t % 2 == 0 for t in range(9)]
    for previous, current in zip(found, found[1:], strict=False):
        if not current.fresh:
            assert current.inspection.maps["gradient"] is previous.inspection.maps["gradient"]
    fresh_maps = [f.inspection.maps["gradient"] for f in found if f.fresh]
    assert not np.array_equal(fresh_maps[0], fresh_maps[1])  # fresh maps are the frame's own


def test_single_frames_go_side_by_side_with_the_maps_of_one_at_a_time(agent, observations, monkeypatch):
    """On a CPU with two torch threads, Insens and IG frames run on the frame threads, one torch
    thread each, and give the maps that one frame at a time on one thread gives, bit for bit."""
    import threading

    import torch

    import rl_insens.inspection as inspection

    frames = observations(4, seed=3)
    methods = ("insens", "integrated_gradients", "gradient")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = inspection.inspect_frames(agent, frames, methods)
        torch.set_num_threads(2)
        ran_on = []
        real = inspection.attribute

        def noting_thread(model, x, method, target=None):
            ran_on.append((method, threading.current_thread().name, torch.get_num_threads()))
            return real(model, x, method, target=target)

        monkeypatch.setattr(inspection, "attribute", noting_thread)
        side_by_side = inspection.inspect_frames(agent, frames, methods)
    finally:
        torch.set_num_threads(previous)
    frame_threads = {name for m, name, n in ran_on if m != "gradient" and n == 1}
    assert len(frame_threads) == 2 and all(name.startswith("rl-insens-frame") for name in frame_threads)
    assert [m for m, *_ in ran_on].count("insens") == 4  # one frame a call
    assert [(m, n) for m, name, n in ran_on if m == "gradient"] == [("gradient", 2)]  # the batch, as before
    assert torch.get_num_threads() == previous
    for one, other in zip(serial, side_by_side, strict=True):
        for method in methods:
            if method == "gradient":
                np.testing.assert_allclose(one.maps[method], other.maps[method], rtol=1e-5, atol=1e-7)
            else:
                np.testing.assert_array_equal(one.maps[method], other.maps[method])


def test_a_stop_request_ends_the_side_by_side_frames(agent, observations, monkeypatch):
    """Frames not yet begun when a stop is asked for are not attributed."""
    import torch

    import rl_insens.inspection as inspection

    done = []
    real = inspection.attribute

    def counting(model, x, method, target=None):
        done.append(method)
        return real(model, x, method, target=target)

    monkeypatch.setattr(inspection, "attribute", counting)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            inspection.inspect_frames(agent, observations(12, seed=4), ("insens",),
                                      should_stop=lambda: len(done) >= 2)
    finally:
        torch.set_num_threads(previous)
    assert 2 <= len(done) <= 3  # the two asked for, and at most one that began beside the second


def test_inspections_of_play_report_and_explain_the_action_taken(agent, observations):
    """The caption, the run's rows and the maps follow the action the environment was given,
    not a second reading of the network that a near tie could turn."""
    from rl_insens.attribution import attribute
    from rl_insens.inspection import inspect_frames, inspect_play
    from rl_insens.rollout import Step

    frames = observations(3, seed=5)
    greedy = agent.network(agent.preprocess(frames)).argmax(1)
    taken = (greedy + 1) % agent.network(agent.preprocess(frames)).shape[1]  # never the greedy one
    steps = [Step(0, t, frames[t], int(taken[t]), 0.0, 0.0, t == 2, False) for t in range(3)]
    found = [f for chunk in inspect_play(agent, steps, ("gradient",), batch=3) for f in chunk]
    assert [f.inspection.action for f in found] == taken.tolist()
    expected = attribute(agent.network, agent.preprocess(frames), "gradient", target=taken)
    for f, own in zip(found, expected, strict=True):
        np.testing.assert_allclose(f.inspection.maps["gradient"], own.numpy(), rtol=1e-5, atol=1e-7)
    assert [i.action for i in inspect_frames(agent, frames, ())] == greedy.tolist()  # none given: greedy
    with pytest.raises(ValueError, match="2 actions for 3 observations"):
        inspect_frames(agent, frames, (), actions=[0, 1])
    with pytest.raises(ValueError, match="actions must be in"):
        inspect_frames(agent, frames, (), actions=[0, 1, 99])
