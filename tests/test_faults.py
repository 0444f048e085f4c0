"""Faults and mistakes a careful user may run into: each ends in a clear error, loses nothing,
and runs nothing that should not run."""

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from nets_for_tests import TEST_NETS, build
from torch import nn

import rl_insens as ri
from rl_insens import runs
from rl_insens.agents import Agent
from rl_insens.engine import read_chain
from rl_insens.envs import PONG
from rl_insens.record import record
from rl_insens.viewer import RunData, RunError, serve


class Payload:
    """A pickle that creates a file when it is loaded: what a crafted file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def tiny_agent(random_rlnet, pong_agent):
    """A random RLNET agent for Pong with a value network (its trunk and a value head)."""

    def make(seed: int = 0, kind: str = "actor-critic") -> Agent:
        net = random_rlnet(seed)
        value = nn.Sequential(*list(net.children())[:-1], nn.Linear(512, 1)).eval()
        return pong_agent(network=net, kind=kind, value_network=value)

    return make


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_agent):
    out = tmp_path_factory.mktemp("run") / "r.mp4"
    return record(tiny_agent(), out, max_steps=3, methods=("gradient",), batch=2, progress=False).run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.run"
    shutil.copytree(run_dir, copy)
    return copy


# ----- 1. nothing in a run directory runs as code ---------------------------------------------------
def test_old_pickled_run_agent_is_refused_not_loaded(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    (run / runs.AGENT_FILE).unlink()
    (run / runs.WEIGHTS_FILE).unlink()
    marker = tmp_path / "ran"
    torch.save(Payload(marker), run / "agent.pt")
    with pytest.raises(RunError, match="record the run again"):
        RunData(run)
    assert not marker.exists()


def test_run_weights_are_read_as_tensors_only(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    marker = tmp_path / "ran"
    torch.save({"network": Payload(marker)}, run / runs.WEIGHTS_FILE)
    spec = json.loads((run / runs.AGENT_FILE).read_text())
    spec["weights_sha256"] = ri.agents.sha256_of(run / runs.WEIGHTS_FILE)  # a consistent forgery
    (run / runs.AGENT_FILE).write_text(json.dumps(spec))
    with pytest.raises(RunError, match="cannot read the agent"):
        RunData(run)
    assert not marker.exists()


def test_damaged_run_weights_are_named(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    (run / runs.WEIGHTS_FILE).write_bytes(b"\0" * 100)
    with pytest.raises(RunError, match="damaged"):
        RunData(run)


@pytest.mark.parametrize("name,constructor,shape", TEST_NETS, ids=[n for n, *_ in TEST_NETS])
def test_recorded_networks_keep_their_layer_names(name, constructor, shape, tmp_path):
    net = build(constructor)
    agent = Agent(net, ["x"] * 4, "q-values", card={"observation_shape": list(shape)})
    runs.save_agent(agent, tmp_path)
    loaded = runs.load_agent(tmp_path)
    assert [link.name for link in read_chain(loaded.network, shape).links] == \
        [link.name for link in read_chain(net, shape).links]
    x = torch.rand(3, *shape)
    assert torch.equal(loaded.network(x), net(x))
    layer = read_chain(net, shape).hidden_layers[0]
    assert torch.equal(ri.switched_projection(loaded.network, x[0], layer).weight,
                       ri.switched_projection(net, x[0], layer).weight)


def test_recorded_agent_round_trip_with_value_network(tmp_path, tiny_agent):
    agent = tiny_agent()
    runs.save_agent(agent, tmp_path)
    loaded = runs.load_agent(tmp_path)
    x = torch.rand(2, 4, 84, 84)
    assert torch.equal(loaded.value_network(x), agent.value_network(x))
    assert loaded.kind == agent.kind and loaded.action_meanings == agent.action_meanings
    assert loaded.scale == agent.scale


def http_get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_viewer_answers_only_its_own_host_names(run_dir):
    server = serve(run_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        url = f"http://127.0.0.1:{port}/api/run"
        assert http_get(url) == 200
        assert http_get(url, f"localhost:{port}") == 200
        assert http_get(url, f"attacker.example:{port}") == 403
        assert http_get(url, "localhost:1") == 403
    finally:
        server.shutdown()
        server.server_close()


# ----- 2. resumes never mix runs; agents are saved whole or not at all ------------------------------
def test_resume_refuses_other_settings(rlnet_agent_dir, tmp_path):
    from rl_insens.evaluation import Task, run_tasks

    agent = tmp_path / "agent"
    shutil.copytree(rlnet_agent_dir, agent)
    tasks = [Task(str(agent), 0, e) for e in range(2)]
    results = tmp_path / "e.jsonl"
    run_tasks(tasks[:1], results, max_steps=3, progress=False)
    with pytest.raises(ValueError, match="--max-steps 3, not 4"):
        run_tasks(tasks, results, resume=True, max_steps=4, progress=False)
    card = json.loads((agent / "card.json").read_text())
    other = {**card["environment"], "noop_max": 0}
    (agent / "card.json").write_text(json.dumps({**card, "environment": other}))
    with pytest.raises(ValueError, match="noop_max"):
        run_tasks(tasks, results, resume=True, max_steps=3, progress=False)
    (agent / "card.json").write_text(json.dumps(card))
    weights = agent / card["weights_file"]
    state = torch.load(weights, weights_only=True)
    state["rlnet"]["out.bias"] += 1
    torch.save(state, weights)
    (agent / "card.json").write_text(json.dumps({**card, "weights_sha256": ri.agents.sha256_of(weights)}))
    with pytest.raises(ValueError, match="has changed"):
        run_tasks(tasks, results, resume=True, max_steps=3, progress=False)
    assert len(results.read_text().splitlines()) == 1  # nothing was added to the old run


def test_save_agent_is_whole_or_not_at_all(sb3_rlnet, tmp_path, monkeypatch):
    from rl_insens.agents import load_agent, save_agent

    model = sb3_rlnet(0)
    agent = tmp_path / "agent"
    save_agent(model.policy, agent, {})
    before = load_agent(agent).network.state_dict()
    with torch.no_grad():
        model.policy.action_net.bias += 1
    crash = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt)  # noqa: E731
    monkeypatch.setattr(ri.agents.native, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):  # the crash comes between the weights and the card
        save_agent(model.policy, agent, {})
    kept = load_agent(agent).network.state_dict()
    assert all(torch.equal(kept[k], before[k]) for k in before)
    monkeypatch.undo()
    save_agent(model.policy, agent, {})
    assert torch.equal(load_agent(agent).network.state_dict()["out.bias"], before["out.bias"] + 1)
    assert len(list(agent.glob("policy*.pt"))) == 1  # the replaced weights are gone


def test_corrupt_weights_without_checksum_get_one_line(rlnet_agent_dir, tmp_path):
    from rl_insens.agents import load_agent

    agent = tmp_path / "agent"
    shutil.copytree(rlnet_agent_dir, agent)
    card = json.loads((agent / "card.json").read_text())
    del card["weights_sha256"]
    (agent / "card.json").write_text(json.dumps(card))
    (agent / card["weights_file"]).write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="holds no readable rl-insens weights"):
        load_agent(agent)


# ----- 3. ordinary mistakes get one line, before any work ----------------------------------------------
def cli(*args):
    from click.testing import CliRunner

    from rl_insens.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *mentions) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    for mention in mentions:
        assert mention in result.output, result.output


@pytest.mark.parametrize("option,value", [("--max-steps", 0), ("--max-steps", -1), ("--episodes", 0),
                                          ("--workers", 0), ("--workers", -3)])
def test_evaluate_refuses_counts_below_one(rlnet_agent_dir, tmp_path, option, value):
    result = cli("evaluate", "--agent", rlnet_agent_dir, option, value, "--json", tmp_path / "e.json")
    one_line_error(result, option)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("device", ["tpu", "cuda:7", "cuda"])
def test_record_refuses_devices_this_machine_lacks(rlnet_agent_dir, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("record", "--agent", rlnet_agent_dir, "--device", device, "--out", tmp_path / "v.mp4")
    one_line_error(result, device)
    assert not list(tmp_path.iterdir())


def test_record_checks_outputs_before_any_work(rlnet_agent_dir, tmp_path):
    (tmp_path / "file").write_text("")
    one_line_error(cli("record", "--agent", rlnet_agent_dir, "--out", tmp_path / "file" / "v.mp4"),
                   "is a file")
    (tmp_path / "dir.mp4").mkdir()
    one_line_error(cli("record", "--agent", rlnet_agent_dir, "--out", tmp_path / "dir.mp4"),
                   "existing directory")
    one_line_error(cli("record", "--agent", rlnet_agent_dir, "--methods", ",", "--out", tmp_path / "v.mp4"),
                   "no attribution method")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4", "file"]
    assert not list((tmp_path / "dir.mp4").iterdir())


def test_view_port_busy_or_invalid(tmp_path):
    import socket

    one_line_error(cli("view", tmp_path, "--port", 70000), "--port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        one_line_error(cli("view", tmp_path, "--port", busy.getsockname()[1]), "cannot serve")


def test_view_names_a_truncated_or_missing_file(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    steps = run / runs.STEPS_FILE
    steps.write_bytes(steps.read_bytes()[:200])
    with pytest.raises(RunError, match="steps.npz is damaged or cut short"):
        RunData(run)
    shutil.rmtree(run)
    run = copy_run(run_dir, tmp_path)
    (run / runs.CHUNKS / runs.chunk_name(1)).unlink()
    with pytest.raises(RunError, match="chunk_00001.npz is missing"):
        RunData(run)


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_bench_names_an_unreadable_gz_and_leaves_no_folder(tmp_path, damage):
    import gzip

    data = tmp_path / "mnist"
    data.mkdir()
    from rl_insens.bench.data import MNIST_FILES

    for name in MNIST_FILES:
        content = gzip.compress(b"\0" * 5000)
        content = content[:len(content) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(99)
        (data / f"{name}.gz").write_bytes(content)
    result = cli("bench", "mnist", "--data-dir", data, "--results", tmp_path / "results")
    one_line_error(result, "train-images-idx3-ubyte.gz")
    assert not (tmp_path / "results").exists()


# ----- 4. Ctrl-C during record ---------------------------------------------------------------------------
def recorded_frames(result) -> tuple[int, np.ndarray]:
    import imageio.v3 as iio

    t = np.load(result.run_dir / runs.STEPS_FILE)["t"]
    return len(list(iio.imiter(result.video))), t


@pytest.mark.slow
def test_first_ctrl_c_stops_within_a_second_and_keeps_the_frames(tmp_path, monkeypatch, tiny_agent):
    import os
    import signal
    import time

    import rl_insens.inspection

    real = rl_insens.inspection.attribute

    def slow_attribute(model, x, method, target=None):
        time.sleep(0.06 * len(x))  # a chunk of 16 frames and 2 methods takes 2 s
        return real(model, x, method, target=target)

    monkeypatch.setattr(rl_insens.inspection, "attribute", slow_attribute)
    sent = []

    def interrupt():  # once the first chunk is saved, during the second one's attribution
        while not (tmp_path / "v.run" / runs.STEPS_FILE).exists():
            time.sleep(0.05)
        time.sleep(0.5)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    result = record(tiny_agent(), tmp_path / "v.mp4", max_steps=200, methods=("gradient", "lrp_epsilon"),
                    batch=16, progress=False)
    assert sent and time.perf_counter() - sent[0] < 1.0
    assert result.interrupted and result.steps > 0
    frames, t = recorded_frames(result)
    assert frames == result.steps == len(t) == len(set(t.tolist()))
    assert result.contact_sheet.exists()
    assert not json.loads((result.run_dir / runs.META_FILE).read_text())["complete"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_ctrl_c_while_the_files_are_finalised_is_ignored(tmp_path, monkeypatch, tiny_agent):
    import os
    import signal

    import rl_insens.record

    real = rl_insens.record.write_contact_sheet

    def interrupted_twice(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(rl_insens.record, "write_contact_sheet", interrupted_twice)
    result = record(tiny_agent(), tmp_path / "v.mp4", max_steps=3, methods=("gradient",), batch=2,
                    progress=False)
    assert result.contact_sheet.exists() and recorded_frames(result)[0] == 3
    assert json.loads((result.run_dir / runs.META_FILE).read_text())["complete"]


def test_interruption_inside_a_chunk_never_duplicates_frames(tmp_path, monkeypatch, tiny_agent):
    import rl_insens.record

    calls = {"n": 0}
    real = rl_insens.record.render.side_by_side

    def interrupt_fourth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the second frame of the second chunk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(rl_insens.record.render, "side_by_side", interrupt_fourth)
    result = record(tiny_agent(), tmp_path / "v.mp4", max_steps=10, methods=("gradient",), batch=2,
                    progress=False)
    frames, t = recorded_frames(result)
    assert result.interrupted and frames == len(t) == 2 and t.tolist() == [0, 1]


def test_record_replaces_an_earlier_run_whole(tmp_path, tiny_agent):
    first = record(tiny_agent(), tmp_path / "v.mp4", max_steps=4, methods=("gradient",), batch=2,
                   progress=False)
    second = record(tiny_agent(), tmp_path / "v.mp4", max_steps=2, methods=("gradient",), batch=2,
                    progress=False)
    assert first.run_dir == second.run_dir
    assert sorted(p.name for p in (second.run_dir / runs.CHUNKS).iterdir()) == [runs.chunk_name(0)]
    assert RunData(second.run_dir).n == 2


# ----- 5. API edge cases ---------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["insens", "neuron_state", "stability_margin", "attribute"])
def test_empty_batch_is_a_clear_value_error(call):
    from nets_for_tests import mlp

    model, x = mlp().eval(), torch.zeros(0, 3, 2, 2)
    with pytest.raises(ValueError, match="batch is empty"):
        if call == "attribute":
            ri.attribute(model, x, "gradient")
        else:
            getattr(ri.engine, call)(model, x)


def test_neurons_must_be_integers_or_a_mask():
    from nets_for_tests import mlp

    model, x = mlp().eval(), torch.rand(3, 2, 2)
    with pytest.raises(ValueError, match="integer indices or a boolean mask"):
        ri.switched_projection(model, x, "1", neurons=[1.5])
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[3, 7]] = True
    assert ri.switched_projection(model, x, "1", neurons=mask).neurons.tolist() == [3, 7]
    with pytest.raises(ValueError, match="16 entries"):
        ri.switched_projection(model, x, "1", neurons=[True, False])


def test_out_of_range_target_is_a_value_error():
    from nets_for_tests import mlp

    model, x = mlp().eval(), torch.rand(2, 3, 2, 2)
    for target in (2, -1, [0, 5]):
        with pytest.raises(ValueError, match=r"target must lie in 0\.\.1"):
            ri.attribute(model, x, "gradient", target=target)
    with pytest.raises(ValueError, match="one per sample"):
        ri.attribute(model, x, "gradient", target=[0, 1, 0])


def test_act_takes_one_finite_observation(tiny_agent):
    agent = tiny_agent()
    frame = np.zeros((4, 84, 84), np.float32)
    with pytest.raises(ValueError, match="one observation"):
        agent.act(np.zeros((2, 4, 84, 84), np.uint8))
    frame[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        agent.act(frame)


def test_inspector_and_wrapper_agree_on_action_probabilities(tiny_agent):
    from rl_insens.frame_inspection import Inspection
    from rl_insens.inspection import inspect_frames

    obs = np.random.default_rng(0).integers(0, 256, (4, 84, 84), dtype=np.uint8)
    for kind in ("actor-critic", "q-values"):
        agent = tiny_agent(kind=kind)
        wrapped = inspect_frames(agent, obs[None], ("gradient",), [False])[0].action_probs
        inspected = Inspection(agent, obs, None, ("gradient",)).action_probs
        np.testing.assert_allclose(wrapped, inspected, atol=1e-6)
    assert sorted(inspected.tolist())[-2:] == [0.0, 1.0]  # greedy on Q-values: all on one action


def test_randomised_copy_leaves_the_global_random_state_alone():
    from rl_insens.faithfulness import randomised_copy

    net = ri.RLNet()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    copy = randomised_copy(net, seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(copy.out.weight, randomised_copy(net, seed=1).out.weight)
    assert not torch.equal(copy.out.weight, net.out.weight)
    assert torch.equal(copy.conv3.weight, net.conv3.weight)


# ----- 6. processes -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_task_stops_the_pool_at_once(tmp_path):
    import os
    import time

    from workers_for_tests import fail_first_sleep_others

    from rl_insens.parallel import run_unordered

    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="task 0 failed"):
        list(run_unordered(fail_first_sleep_others, [(i, str(tmp_path), 2) for i in range(6)], workers=2))
    assert time.perf_counter() - start < 20  # the other tasks would take 30 s each
    for pid in [int(p.stem) for p in tmp_path.glob("*.pid")]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no worker is left running


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "from workers_for_tests import fail_first_sleep_others\n"
        "from rl_insens.parallel import run_unordered\n"
        f"items = [(i, {str(tmp_path)!r}, 2) for i in (1, 2)]\n"
        "list(run_unordered(fail_first_sleep_others, items, workers=2))\n")])
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(workers) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
        except (FileNotFoundError, IndexError):
            return False

    deadline = time.time() + 5
    while any(running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if running(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive


# ----- 7. the Inspector goes back only where it can do so exactly --------------------------------------
def test_inspector_refuses_wrappers_it_cannot_restore(tiny_agent):
    import gymnasium as gym

    agent = tiny_agent()
    counting = gym.wrappers.RecordEpisodeStatistics(ri.make_pong_env(max_episode_steps=None))
    with pytest.raises(ValueError, match="RecordEpisodeStatistics"):
        ri.Inspector(agent, env=counting, methods=("gradient",))
    with pytest.raises(ValueError, match="TimeLimit"):
        ri.Inspector(agent, env=ri.make_pong_env(), methods=("gradient",))


def test_inspector_keeps_the_agents_time_limit(tiny_agent):
    import dataclasses

    agent = tiny_agent()
    agent.settings = dataclasses.replace(PONG, max_episode_steps=3)
    ins = ri.Inspector(agent, seed=0, methods=("gradient",))
    ins.step(10)
    assert ins.t == 3 and ins.done
    ins.back(2)
    assert not ins.done


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os

    from rl_insens.files import write_text

    write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    assert os.stat(tmp_path / "a.txt").st_mode == os.stat(tmp_path / "b.txt").st_mode
