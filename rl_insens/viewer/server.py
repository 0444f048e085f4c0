"""The viewer's HTTP server (standard library only) and the run data behind it.

Pages and images are made on request from the run directory: one frame at a time, chunks of
the run kept in a small cache, so runs of thousands of frames never load at once. The
per-frame analysis (stability margin, state change) is computed in blocks as the page asks.
"""

from __future__ import annotations

import base64
import html
import json
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import torch

from .. import render, runs
from ..runs import RunError
from .replay import Replay, interventions

STATIC = Path(__file__).parent / "static"
ANALYSIS_BLOCK = 32


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return data.tobytes()


class RunData:
    """Read access to a run directory written by :func:`rl_insens.record.record`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise RunError(f"no run directory at {self.dir}")
        self.meta = runs.read_meta(self.dir)
        self.steps = runs.read_npz(self.dir / runs.STEPS_FILE)
        self.chunk_names = list(self.meta["chunks"])
        self.agent = runs.load_agent(self.dir)
        if "t" not in self.steps:
            raise RunError(f"{self.dir / runs.STEPS_FILE} holds no steps")
        self.n = len(self.steps["t"])
        if self.n == 0:
            raise RunError(f"{self.dir} holds no frames")
        sizes = [len(runs.read_npz(self.dir / runs.CHUNKS / name, ("steps",))["steps"])
                 for name in self.chunk_names]
        self.chunk_starts = np.cumsum([0] + sizes)
        if self.chunk_starts[-1] != self.n:
            raise RunError(f"{self.dir}: its chunks hold {self.chunk_starts[-1]} frames, steps.npz {self.n}")
        self.layers = {name: int(state.active[0].numel()) for name, state in
                       self.agent.session(torch.zeros(1, *self.agent.observation_shape)).neurons
                       .layers.items()}
        self.analysis: dict[int, dict] = {}
        self.lock = threading.Lock()
        self.replay: Replay | None = None
        self.chunk = lru_cache(maxsize=4)(self._load_chunk)

    def _load_chunk(self, index: int) -> dict:
        return runs.read_npz(self.dir / runs.CHUNKS / self.chunk_names[index])

    def check_frame(self, t: int) -> None:
        if not 0 <= t < self.n:
            raise KeyError(f"frame {t} is outside the run's 0..{self.n - 1}")

    def frame_data(self, t: int) -> tuple[dict, int]:
        self.check_frame(t)
        index = int(np.searchsorted(self.chunk_starts, t, side="right") - 1)
        return self.chunk(index), t - int(self.chunk_starts[index])

    def summary(self) -> dict:
        s = self.steps
        chosen = s["probs"][np.arange(self.n), s["action"]]
        return {"frames": self.n, "methods": self.meta["methods"], "layers": self.layers,
                "complete": self.meta.get("complete", False), "name": self.dir.name,
                "game": self.meta.get("environment", {}).get("env_id", "unknown game"),
                "series": {"action_prob": chosen.round(4).tolist(),
                           "value": [None if np.isnan(v) else float(v) for v in s["value"]],
                           "score": s["score"].tolist(),
                           "active": (100 * s["active_fraction"]).round(2).tolist()}}

    def frame(self, t: int) -> dict:
        self.check_frame(t)
        s = self.steps
        action = int(s["action"][t])
        value = float(s["value"][t])
        return {"t": t, "episode": int(s["episode"][t]), "step": int(s["t"][t]), "action": action,
                "action_name": self.agent.action_meanings[action], "prob": float(s["probs"][t, action]),
                "value": None if np.isnan(value) else value, "score": float(s["score"][t]),
                "active": float(s["active_fraction"][t]), "fresh": bool(s["fresh"][t])}

    def image(self, t: int, name: str) -> bytes:
        chunk, i = self.frame_data(t)
        screen = chunk["screens"][i]
        if name == "screen":
            return png(render.zoom(screen))
        if f"map_{name}" not in chunk:
            raise KeyError(f"no method {name!r} in this run")
        values = render.to_screen(chunk[f"map_{name}"][i][-1].astype(np.float32), screen.shape)
        return png(render.zoom(render.overlay(render.grey(screen), values, render.robust_scale(values))))

    def recorded_observation(self, t: int) -> np.ndarray:
        chunk, i = self.frame_data(t)
        return chunk["observations"][i]

    def observation(self, t: int) -> torch.Tensor:
        return self.agent.preprocess(self.recorded_observation(t))

    def neuron(self, t: int, layer: str, index: int) -> dict:
        """Neuron ``index`` of ``layer`` at frame ``t``: v, b̂ and ŵ as one image per stacked frame."""
        if layer not in self.layers:
            raise KeyError(f"no hidden layer {layer!r}; layers: {list(self.layers)}")
        if not 0 <= index < self.layers[layer]:
            raise KeyError(f"neuron index must lie in 0..{self.layers[layer] - 1}")
        p = self.agent.session(self.observation(t)).projection(layer, [index])
        weight = p.weight[0].cpu().numpy()
        scale = render.robust_scale(weight)
        images = []
        for frame in weight:
            picture = render.zoom(render.overlay(np.full((*frame.shape, 3), 255, np.uint8), frame, scale), 3)
            images.append("data:image/png;base64," + base64.b64encode(png(picture)).decode())
        return {"layer": layer, "index": index, "activity": float(p.activity[0]), "bias": float(p.bias[0]),
                "active": bool(p.activity[0] > 0), "images": images}

    def interventions(self, t: int) -> dict:
        """The frame's counterfactual interventions (see :mod:`.replay`), pictures as PNG data URLs."""
        self.check_frame(t)
        with self.lock:
            if self.replay is None:
                self.replay = Replay(self.steps, self.meta, self.recorded_observation)
        result = interventions(self.replay, t, self.agent)
        for move in result["moves"]:
            move["image"] = "data:image/png;base64," + base64.b64encode(png(move.pop("picture"))).decode()
        return result

    def analysis_block(self, block: int) -> dict:
        """Stability margin and state change for the frames of one block (computed once)."""
        with self.lock:
            if block not in self.analysis:
                start, stop = block * ANALYSIS_BLOCK, min(self.n, (block + 1) * ANALYSIS_BLOCK)
                self.check_frame(start)
                first = max(0, start - 1)
                x = torch.cat([self.observation(t) for t in range(first, stop)])
                view = self.agent.session(x)  # one forward pass for both
                margins, _ = view.stability()
                state = view.neurons
                active = torch.cat([s.active.flatten(1) for s in state.layers.values()], 1)
                switched = (active[1:] != active[:-1]).sum(1).tolist()
                changes = ([0] if first == start else []) + switched
                self.analysis[block] = {"start": start, "margin": margins[start - first:].tolist(),
                                        "switched": changes}
            return self.analysis[block]


def error_page(message: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>rl-insens viewer</title></head>"
            f"<body style='font-family:sans-serif;margin:3em'><h1>Cannot show this run</h1>"
            f"<p id='error'>{html.escape(message)}</p></body></html>").encode()


def make_handler(run: RunData | None, problem: str | None):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def send(self, body: bytes, kind: str, status=HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, data, status=HTTPStatus.OK) -> None:
            self.send(json.dumps(data).encode(), "application/json", status)

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            try:
                if self.headers.get("Host", "").lower() not in self.server.allowed_hosts():
                    # A page elsewhere may point a DNS name at 127.0.0.1 (DNS rebinding); the
                    # Host header still carries that name.
                    return self.send(b"unknown host", "text/plain", HTTPStatus.FORBIDDEN)
                self.route()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page moved on before the answer came

        def route(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            try:
                if problem is not None:
                    status = HTTPStatus.NOT_FOUND if parts[:1] == ["api"] else HTTPStatus.OK
                    return self.send(error_page(problem), "text/html; charset=utf-8", status)
                if not parts:
                    return self.send((STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")
                if parts[0] == "static" and len(parts) == 2 and (STATIC / parts[1]).is_file():
                    suffix = parts[1].rsplit(".", 1)[-1]
                    kind = {"js": "text/javascript", "css": "text/css"}.get(suffix, "text/plain")
                    return self.send((STATIC / parts[1]).read_bytes(), kind)
                if parts == ["api", "run"]:
                    return self.send_json(run.summary())
                if parts[:2] == ["api", "frame"] and len(parts) == 3:
                    return self.send_json(run.frame(int(parts[2])))
                if parts[:2] == ["api", "image"] and len(parts) == 4:
                    return self.send(run.image(int(parts[2]), parts[3].removesuffix(".png")), "image/png")
                if parts[:2] == ["api", "neuron"] and len(parts) == 3:
                    return self.send_json(run.neuron(int(parts[2]), query.get("layer", ""),
                                                     int(query.get("index", "-1"))))
                if parts[:2] == ["api", "interventions"] and len(parts) == 3:
                    return self.send_json(run.interventions(int(parts[2])))
                if parts[:2] == ["api", "analysis"] and len(parts) == 3:
                    return self.send_json(run.analysis_block(int(parts[2])))
                self.send_json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)
            except (KeyError, ValueError) as error:
                self.send_json({"error": str(error).strip("'\"")}, HTTPStatus.BAD_REQUEST)

    return Handler


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class ViewerServer(ThreadingHTTPServer):
    """Answers only requests addressed to this machine by name (or to the ``--host`` asked for)."""

    def __init__(self, host: str, port: int, handler) -> None:
        super().__init__((host, port), handler)
        self.asked_host = f"[{host}]" if ":" in host and not host.startswith("[") else host

    def allowed_hosts(self) -> set[str]:
        port = self.server_address[1]
        names = {*LOCAL_HOSTS, self.asked_host.lower()}
        return {f"{name}:{port}" for name in names} | (names if port == 80 else set())


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server (not yet running: call ``serve_forever``) for ``run_dir``; a bad run gets an error page.

    Requests whose ``Host`` header names another host are refused, which defeats DNS rebinding.
    """
    try:
        run, problem = RunData(run_dir), None
    except RunError as error:
        run, problem = None, str(error)
    server = ViewerServer(host, port, make_handler(run, problem))
    # Closing waits for requests in flight: a thread killed inside torch at exit aborts Python.
    server.daemon_threads, server.block_on_close = False, True
    server.problem = problem
    return server
