"""A recorded run as the viewer reads it: summary, frames, images, neuron projections, and the
per-frame analysis (stability margin, state change) computed in blocks as the page asks.

Chunks of the run are kept in a small cache, so runs of thousands of frames never load at once.
"""

from __future__ import annotations

import base64
import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import render, runs
from ..runs import RunError
from .replay import Replay, interventions

ANALYSIS_BLOCK = 32


def png(image: np.ndarray) -> bytes:
    """``image`` (RGB) encoded as PNG bytes."""
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
        """Frame ``t``'s step-table row as JSON-ready values, with the action's name and probability."""
        self.check_frame(t)
        s = self.steps
        action = int(s["action"][t])
        value = float(s["value"][t])
        return {"t": t, "episode": int(s["episode"][t]), "step": int(s["t"][t]), "action": action,
                "action_name": self.agent.action_meanings[action], "prob": float(s["probs"][t, action]),
                "value": None if np.isnan(value) else value, "score": float(s["score"][t]),
                "active": float(s["active_fraction"][t]), "fresh": bool(s["fresh"][t])}

    def image(self, t: int, name: str) -> bytes:
        """Frame ``t``'s screen as a PNG (``name`` ``screen``), or method ``name``'s map over it in grey;
        a ``KeyError`` for a method the run did not record."""
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
