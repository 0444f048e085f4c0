"""rl-insens compare: several agents on the same states, one row each, one colour scale per column."""

import copy
import dataclasses

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import rl_insens as ri
from rl_insens.agents import Agent
from rl_insens.cli import main as cli
from rl_insens.compare import compare, states_from_play, states_from_run
from rl_insens.envs import PONG
from rl_insens.record import record

ROW = 46 + 22 + 210 * ri.render.PANEL_ZOOM + 26  # caption, title, screen, legend
PANEL = 160 * ri.render.PANEL_ZOOM


def louder(agent: Agent, factor: float = 10.0) -> Agent:
    """The same policy with its logits multiplied: the same actions, gradients ``factor`` times
    larger, and Insens unchanged (it sums over hidden neurons only, eq. 8)."""
    network = copy.deepcopy(agent.network)
    with torch.no_grad():
        network.out.weight.mul_(factor)
        network.out.bias.mul_(factor)
    return dataclasses.replace(agent, network=network, card={"steps_trained": 2000})


def panel(frame: np.ndarray, row: int, column: int) -> np.ndarray:
    top = row * ROW + 46 + 22  # below the row's caption and the panel's title
    return frame[top:top + 210 * ri.render.PANEL_ZOOM, column * PANEL:(column + 1) * PANEL].astype(int)


@pytest.mark.slow
def test_rows_share_each_columns_colour_scale(tmp_path, pong_agent):
    a = pong_agent(0, card={"steps_trained": 1000})
    out = compare([a, louder(a)], tmp_path / "c.mp4", steps=5, methods=("insens", "gradient"),
                  names=["early", "late"], crf=0, progress=False)
    frames = list(iio.imiter(out))
    assert len(frames) == 5 and frames[0].shape == (2 * ROW, 3 * PANEL, 3)
    last = frames[-1]
    assert np.abs(panel(last, 0, 0) - panel(last, 1, 0)).mean() < 1  # the same screen in both rows
    assert np.abs(panel(last, 0, 1) - panel(last, 1, 1)).mean() < 1  # Insens: equal maps, equal colours
    # Gradient: ten times larger in the second row. On one scale per column it is more saturated
    # there; on a scale per row the two panels would look the same.
    assert np.abs(panel(last, 0, 2) - panel(last, 1, 2)).mean() > 5
    assert out.with_suffix(".png").exists()


def test_states_from_a_run_directory(tmp_path, pong_agent):
    a, b = pong_agent(0), pong_agent(1)
    run = record(a, tmp_path / "r.mp4", max_steps=4, methods=("gradient",), progress=False).run_dir
    states = states_from_run(run, steps=3)
    played = states_from_play(a, 3)
    assert np.array_equal(states.observations, played.observations)  # the run holds the same play
    assert np.array_equal(states.screens, played.screens) and states.steps.tolist() == [0, 1, 2]
    out = compare([b, a], tmp_path / "from_run.gif", states=states, methods=("gradient",), progress=False)
    assert len(iio.imread(out)) == 3


def test_agents_seeing_other_observations_are_refused(tmp_path, pong_agent):
    a = pong_agent(0)
    other = dataclasses.replace(a, settings=dataclasses.replace(PONG, preprocessing="sb3"))
    with pytest.raises(ValueError, match="preprocessing.*compare agents of one preprocessing"):
        compare([a, other], tmp_path / "x.mp4", steps=2, methods=("gradient",), progress=False)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_compare_command(tmp_path, sb3_rlnet):
    from rl_insens.agents import save_agent

    paths = []
    for seed in (0, 1):
        paths.append(str(save_agent(sb3_rlnet(seed).policy, tmp_path / f"ckpt{seed}",
                                    {"environment": PONG.as_dict(), "steps_trained": 1000 * seed})))
    out = tmp_path / "compare.mp4"
    result = CliRunner().invoke(cli, ["compare", "--agents", *paths, "--steps", "3", "--methods", "gradient",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    frames = list(iio.imiter(out))
    assert len(frames) == 3 and frames[0].shape[:2] == (2 * ROW, 2 * PANEL)
    missing = str(tmp_path / "none")
    bad = CliRunner().invoke(cli, ["compare", "--agents", paths[0], missing, "--out", str(out)])
    assert bad.exit_code == 2 and "no agent at" in bad.output
    bad = CliRunner().invoke(cli, ["compare", "--agents", *paths, "--states", str(tmp_path / "none"),
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


@pytest.mark.slow
def test_each_row_is_a_run_directory_the_viewer_opens(tmp_path, pong_agent):
    from rl_insens.clipstats import clip_statistics
    from rl_insens.viewer import RunData

    a = pong_agent(0, card={"steps_trained": 1000})
    compare([a, louder(a)], tmp_path / "c.mp4", steps=3, methods=("insens", "gradient"),
            names=["early", "late"], progress=False)
    rows = sorted(p for p in (tmp_path / "c.run").iterdir() if p.is_dir())
    assert [r.name for r in rows] == ["0_early", "1_late"]
    for row in rows:
        data = RunData(row)
        assert data.n == 3 and data.summary()["complete"] and data.image(2, "gradient").startswith(b"\x89PNG")
    early, late = (np.load(r / "chunks" / "chunk_00000.npz") for r in rows)
    assert np.array_equal(early["observations"], late["observations"]) and "ram" in early
    assert np.array_equal(early["map_insens"], late["map_insens"])
    nonzero = early["map_gradient"] != 0
    ratio = late["map_gradient"][nonzero].astype(np.float32) / early["map_gradient"][nonzero]
    assert np.median(ratio) == pytest.approx(10, rel=1e-2)
    first, second = (clip_statistics(r) for r in rows)
    assert first["active_percent/conv1"] == second["active_percent/conv1"]
    compare([a], tmp_path / "c.mp4", steps=2, methods=("gradient",), progress=False)  # replaces the rows
    left = [p.name for p in (tmp_path / "c.run").iterdir() if p.is_dir()]
    assert left == ["0_" + a.source.replace(" ", "_")]
