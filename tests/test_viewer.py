"""The viewer: its run data, its error pages, and the page itself in a real browser."""

import json
import shutil
import threading
import urllib.request

import pytest
import torch

import rl_insens as ri
from rl_insens.agents import Agent
from rl_insens.envs import PONG
from rl_insens.record import record
from rl_insens.viewer import RunData, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    net = ri.RLNet().eval()
    for layer in (net.conv1, net.conv2, net.conv3, net.fc1):
        layer.bias.data -= 0.03
    agent = Agent(net, [f"a{i}" for i in range(18)], "actor-critic", settings=PONG)
    out = tmp_path_factory.mktemp("run") / "r.mp4"
    return record(agent, out, max_steps=6, methods=("insens", "gradient"), batch=4, progress=False).run_dir


@pytest.fixture(scope="module")
def server(run_dir):
    server = serve(run_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url):
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_run_data(run_dir):
    run = RunData(run_dir)
    summary = run.summary()
    assert summary["frames"] == 6 and summary["methods"] == ["insens", "gradient"]
    assert summary["game"] == "ALE/Pong-v5"
    assert summary["layers"] == {"conv1": 14112, "conv2": 3136, "conv3": 3136, "fc1": 512}
    assert run.image(3, "insens").startswith(b"\x89PNG")
    neuron = run.neuron(2, "conv3", 5)
    assert len(neuron["images"]) == 4 and neuron["active"] == (neuron["activity"] > 0)
    block = run.analysis_block(0)
    assert block["switched"][0] == 0 and len(block["switched"]) == 6
    states = [ri.neuron_state(run.agent.network, run.observation(t)) for t in range(6)]
    for t in range(1, 6):  # neurons whose state differs from the previous frame's, counted directly
        layers = states[t].layers
        assert block["switched"][t] == sum(int((layers[k].active != states[t - 1].layers[k].active).sum())
                                           for k in layers)


def test_margins_are_distances_to_a_switch_with_none_nearer(run_dir):
    """The viewer's stability margin at a frame, checked by moving the input: towards the nearest
    neuron's hyperplane, 1% short of the margin no hidden neuron has switched, 1% past it that
    neuron has; the activities come from the model's own forward pass."""
    run = RunData(run_dir)
    block = run.analysis_block(0)
    model = run.agent.network
    modules = dict(model.named_modules())

    def activities(x):
        seen = {}
        hooks = [modules[name].register_forward_hook(lambda m, i, out, name=name: seen.update({name: out}))
                 for name in run.layers]
        try:
            model(x)
        finally:
            for hook in hooks:
                hook.remove()
        return {name: out.flatten() for name, out in seen.items()}

    for t in (1, 4):
        x = run.observation(t)
        _, nearest = ri.engine.stability_margin(model, x)
        layer, index = nearest[0]
        p = ri.switched_projection(model, x[0], layer, [index])
        w, v = p.weight[0].double(), float(p.activity[0])
        step = (-v * w / w.square().sum()).float()  # from x to that neuron's hyperplane
        assert float(step.norm()) == pytest.approx(block["margin"][t], rel=1e-3)  # float32, v small
        here, short, past = activities(x), activities(x + 0.99 * step), activities(x + 1.01 * step)
        for name in run.layers:
            assert torch.equal(short[name] > 0, here[name] > 0), f"{name} switched before the margin"
        assert (past[layer][index] > 0) != (v > 0)


def test_api_and_bad_requests(server):
    status, body = get(server + "/api/frame/2")
    assert status == 200 and json.loads(body)["t"] == 2
    assert get(server + "/api/frame/99")[0] == 400
    status, body = get(server + "/api/neuron/0?layer=nope&index=0")
    assert status == 400 and b"no hidden layer" in body
    assert get(server + "/api/nothing")[0] == 404


def test_missing_and_malformed_runs_get_an_error_page(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    cases = ((tmp_path / "missing", b"no run directory"), (tmp_path / "bad", b"not a readable run"))
    for path, message in cases:
        server = serve(path, port=0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            status, body = get(f"http://127.0.0.1:{server.server_address[1]}/")
            assert status == 200 and message in body and b"Traceback" not in body
        finally:
            server.shutdown()
            server.server_close()


@pytest.mark.browser
def test_page_in_a_real_browser(server, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no Chromium here: install Debian's chromium package to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(server + "/")
        counter = page.locator("#frame-counter")
        sync_api.expect(counter).to_have_text("frame 0 / 5")
        page.wait_for_function("document.getElementById('img-insens').naturalWidth > 0")
        first = page.get_attribute("#img-insens", "src")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        sync_api.expect(counter).to_have_text("frame 2 / 5")
        assert page.get_attribute("#img-insens", "src") != first
        page.wait_for_function("document.getElementById('img-insens').naturalWidth > 0")
        page.select_option("#layer", "conv2")
        page.fill("#neuron-index", "7")
        page.click("#show-neuron")
        sync_api.expect(page.locator(".neuron-image")).to_have_count(4)
        assert "conv2[7] at frame 2" in page.text_content("#neuron-info")
        page.click("#run-interventions")
        sync_api.expect(page.locator("#interventions-grid figure")).to_have_count(8)
        assert "moves showed on the screen" in page.text_content("#interventions-info")
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        browser.close()
    assert (tmp_path / "viewer.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """The bundled agent long enough into a game of Pong that the ball is in play."""
    out = tmp_path_factory.mktemp("long") / "r.mp4"
    return record("agents/pong_rlnet", out, max_steps=70, methods=("insens",), batch=16,
                  progress=False).run_dir


@pytest.mark.slow
def test_interventions_match_the_inspector_at_the_same_frame(long_run):
    """The viewer plays the run again from its seed and actions and forks the emulator there:
    the same state as the inspector's own play, so the same change in the policy's outputs."""
    run = RunData(long_run)
    result = run.interventions(66)
    moves = {(m["object"], m["axis"], m["pixels"]): m for m in result["moves"]}
    assert set(moves) == {("ball", axis, p) for axis in "xy" for p in (-10, -5, 5, 10)}
    assert all(m["image"].startswith("data:image/png;base64,") for m in moves.values())
    assert result["dropped"] == sum(not m["moved"] for m in moves.values()) < len(moves)
    ins = ri.Inspector("agents/pong_rlnet", seed=0, methods=("insens",))
    ins.step(66)
    for key in [("ball", "x", 5), ("ball", "y", -10)]:
        expected = ins.intervene(ball=(key[2], 0) if key[1] == "x" else (0, key[2]))
        assert moves[key]["moved"] == expected.moved
        assert moves[key]["logit_change"] == pytest.approx(expected.logit_change, rel=1e-5, abs=1e-6)
    run.interventions(10)  # back to an earlier frame of the episode: played again from its start
    assert run.interventions(66)["moves"] == result["moves"]


@pytest.mark.slow
def test_a_run_that_cannot_be_played_again_gets_no_interventions(long_run):
    from rl_insens.viewer.replay import Replay

    run = RunData(long_run)
    steps = {**run.steps, "action": (run.steps["action"] + 1) % 6}  # not the actions the run took
    replay = Replay(steps, run.meta, run.recorded_observation)
    with pytest.raises(ValueError, match="cannot be played again"):
        replay.goto(60)
