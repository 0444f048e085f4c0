"""Faults and mistakes a careful user may run into: each ends in a clear error, loses nothing,
and runs nothing that should not run."""

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
import torch
from nets_for_tests import TEST_NETS, build
from torch import nn

import rl_insens as ri
from rl_insens import runs
from rl_insens.agents import Agent
from rl_insens.engine import read_chain
from rl_insens.record import record
from rl_insens.viewer import RunData, RunError, serve


class Payload:
    """A pickle that creates a file when it is loaded: what a crafted file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def tiny_agent(seed: int = 0, kind: str = "actor-critic") -> Agent:
    torch.manual_seed(seed)
    net = ri.RLNet().eval()
    value = nn.Sequential(*list(net.children())[:-1], nn.Linear(512, 1)).eval()
    return Agent(net, [f"a{i}" for i in range(18)], kind, value)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
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


def test_recorded_agent_round_trip_with_value_network(tmp_path):
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
