"""Pictures from arrays: heatmap colours, panels, legends, captions, and whole video frames
(:class:`FrameDrawer` for a recording, :class:`RowsDrawer` for a comparison). Arrays in, arrays out.

The colours are the paper's: red for positive values, blue for negative, and the game screen
showing through where a map is zero. Each map is scaled symmetrically by a robust magnitude
(a high percentile of |value|), smoothed over time so that a video does not flicker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .inspection import StepInspection
    from .rollout import Step

POSITIVE = np.array([220, 30, 30], np.float32)  # red
NEGATIVE = np.array([30, 60, 220], np.float32)  # blue
SCALE_PERCENTILE = 99.5
SMOOTHING = 0.8
"""Weight of the previous scale in the moving scale (0: none)."""
PANEL_ZOOM = 2
SINGLE_ZOOM = 3
"""Zoom of the panels when one method is drawn: the map full size beside the game."""
FONT = cv2.FONT_HERSHEY_SIMPLEX
CAPTION_LINE = 20
"""Pixels per line of a caption strip (at least two lines)."""
TITLE_HEIGHT = 22
LEGEND_HEIGHT = 26


def robust_scale(values: np.ndarray) -> float:
    """A symmetric scale for a map: a high percentile of its magnitudes (never zero)."""
    magnitude = np.abs(values)
    scale = float(np.percentile(magnitude, SCALE_PERCENTILE)) if magnitude.size else 0.0
    return scale if scale > 0 else float(magnitude.max()) or 1.0


@dataclass
class SmoothScale:
    """The scale of one method's maps, moving smoothly from frame to frame."""

    weight: float = SMOOTHING
    value: float | None = field(default=None)

    def update(self, values: np.ndarray) -> float:
        scale = robust_scale(values)
        self.value = scale if self.value is None else self.weight * self.value + (1 - self.weight) * scale
        return self.value


def to_screen(image: np.ndarray, screen_shape: tuple[int, ...]) -> np.ndarray:
    """An 84x84 map or frame stretched back onto the game screen it was resized from (``screen_shape``
    starts with the screen's height and width)."""
    height, width = screen_shape[:2]
    return cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def overlay(background: np.ndarray, values: np.ndarray, scale: float) -> np.ndarray:
    """Colour ``values`` (same height/width as ``background``) over ``background``: an RGB uint8
    image, or a grey one ``[H, W]`` (what :func:`grey` gives), which is coloured by table lookup
    in half the time, with the map's strength taken to 1/255."""
    strength = np.clip(values / scale, -1, 1)
    if background.ndim == 2:
        level = np.rint(strength * 255).astype(np.int32) + 255
        return _grey_table().take(background.astype(np.int32) * 511 + level, axis=0)
    strength = strength[..., None]
    base = background.astype(np.float32)
    colour = np.where(strength > 0, POSITIVE, NEGATIVE)
    return (base + np.abs(strength) * (colour - base)).astype(np.uint8)


@lru_cache(maxsize=1)
def _grey_table() -> np.ndarray:
    """``[256 * 511, 3]``: at ``511 g + k``, grey level g under strength (k - 255) / 255, coloured
    as :func:`overlay` (flat, since one ``take`` is 3x faster than indexing by two arrays)."""
    base = np.arange(256, dtype=np.float32)[:, None, None]
    strength = (np.arange(511, dtype=np.float32)[None, :, None] - 255) / 255
    colour = np.where(strength > 0, POSITIVE, NEGATIVE)
    return (base + np.abs(strength) * (colour - base)).astype(np.uint8).reshape(-1, 3)


def grey(rgb: np.ndarray, amount: float = 0.55) -> np.ndarray:
    """A paler, grey version of a screen ``[H, W]``, so that the colours of a map stand out on it."""
    level = rgb.astype(np.float32).mean(-1)
    return (255 - amount * (255 - level)).astype(np.uint8)



def zoom(image: np.ndarray, factor: int = PANEL_ZOOM) -> np.ndarray:
    """``image`` enlarged ``factor`` times, each pixel a sharp block (nearest neighbour)."""
    return cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor),
                      interpolation=cv2.INTER_NEAREST)


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """``image`` under a white bar with ``title`` written on it."""
    bar = np.full((TITLE_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (6, 16), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image])


def legend(width: int, scale: float | None) -> np.ndarray:
    """A blue-white-red bar labelled with the symmetric scale of the panel above it."""
    bar = np.full((LEGEND_HEIGHT, width, 3), 255, np.uint8)
    if scale is None:
        return bar
    bar[4:12, 60:width - 60] = _ramp(width - 120)
    for text, x in ((f"-{scale:.1e}", 2), ("0", width // 2 - 4), (f"+{scale:.1e}", width - 58)):
        cv2.putText(bar, text, (x, 23), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


@lru_cache(maxsize=8)
def _ramp(width: int) -> np.ndarray:
    """The legend's colour bar, blue through white to red."""
    return overlay(np.full((8, width), 255, np.uint8), np.linspace(-1, 1, width)[None].repeat(8, 0), 1.0)


def panel(background: np.ndarray, values: np.ndarray | None, scale: float | None, title: str,
          factor: int = PANEL_ZOOM) -> np.ndarray:
    """One video panel: a title, the screen with the map over it (zoomed by ``factor``), a legend."""
    image = background if values is None else overlay(background, values, scale)
    image = zoom(image, factor)
    bar = legend(image.shape[1], None if values is None else scale)
    return np.concatenate([titled(image, title), bar])


def caption(width: int, lines: list[str]) -> np.ndarray:
    """A strip with the lines of text, its height set by how many there are (two at least)."""
    strip = np.full((6 + CAPTION_LINE * max(2, len(lines)), width, 3), 245, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (8, 18 + CAPTION_LINE * i), FONT, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    return strip


def side_by_side(panels: list[np.ndarray], lines: list[str]) -> np.ndarray:
    """Panels in a row above a caption strip; height and width even, as H.264 wants."""
    row = np.concatenate(panels, axis=1)
    frame = np.concatenate([row, caption(row.shape[1], lines)])
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


def contact_sheet(frames: list[np.ndarray], columns: int = 1, width: int = 900) -> np.ndarray:
    """Frames in a grid, each shrunk to ``width`` pixels, for a quick look at a whole video."""
    size = (width, round(frames[0].shape[0] * width / frames[0].shape[1]))
    small = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    while len(small) % columns:
        small.append(np.full_like(small[0], 255))
    rows = [np.concatenate(small[i:i + columns], axis=1) for i in range(0, len(small), columns)]
    return np.concatenate(rows)


class FrameDrawer:
    """Turns one step of play (its screen and observation) and what the network did there into a
    video frame."""

    def __init__(self, methods: tuple[str, ...], layout: str, meanings: list[str], game: str) -> None:
        self.methods, self.layout, self.meanings, self.game = methods, layout, meanings, game
        self.scales = {m: SmoothScale() for m in methods}
        self.stack_method = "insens" if "insens" in methods else methods[0]
        self.zoom = SINGLE_ZOOM if layout == "methods" and len(methods) == 1 else PANEL_ZOOM

    def __call__(self, step: Step, inspection: StepInspection) -> np.ndarray:
        screen, observation = step.screen, step.observation
        backdrop = grey(screen)
        if self.layout == "methods":
            title = f"{self.game}  episode {step.episode}  step {step.t}"
            panels = [panel(screen, None, None, title, self.zoom)]
            for method in self.methods:
                newest = inspection.maps[method][-1]  # the newest frame of the stack
                values = to_screen(newest, screen.shape)
                scale = self.scales[method].update(values)
                panels.append(panel(backdrop, values, scale, method, self.zoom))
        else:
            maps = inspection.maps[self.stack_method]
            scale = self.scales[self.stack_method].update(maps)
            panels = [panel(screen, None, None, f"step {step.t}")]
            for k in range(len(observation)):
                gray = to_screen(observation[k], screen.shape)
                frame = grey(np.repeat(gray[..., None], 3, -1))
                panels.append(panel(frame, to_screen(maps[k], screen.shape), scale,
                                           f"frame t-{len(observation) - 1 - k}: {self.stack_method}"))
        action = inspection.action
        value = "n/a" if inspection.value is None else f"{inspection.value:+.2f}"
        probability = inspection.action_probs[action]
        what = f"step {step.t}   action {self.meanings[action]} (p={probability:.2f})   "
        state = (f"value {value}   score {step.score:+.0f}   "
                 f"active neurons {inspection.active_fraction:.1%}")
        timing = "ms/frame: " + "  ".join(f"{m} {1e3 * s:.0f}" for m, s in inspection.seconds.items())
        narrow = len(panels) == 2  # two panels are too narrow for the whole first line
        return side_by_side(panels, [what, state, timing] if narrow else [what + state, timing])


class RowsDrawer:
    """One frame: per agent a caption strip over the screen and one panel per method."""

    def __init__(self, names: list[str], agents: list, methods: tuple[str, ...]) -> None:
        self.names, self.agents, self.methods = names, agents, methods
        self.scales = {m: SmoothScale() for m in methods}  # one per column, shared by the rows

    def __call__(self, screen: np.ndarray, episode: int, t: int, inspections: list) -> np.ndarray:
        backdrop = grey(screen)
        values = {m: [to_screen(i.maps[m][-1], screen.shape) for i in inspections]
                  for m in self.methods}
        scales = {m: self.scales[m].update(np.stack(v)) for m, v in values.items()}
        rows = []
        rows_of = zip(self.names, self.agents, inspections, strict=True)
        for row, (name, agent, inspection) in enumerate(rows_of):
            panels = [panel(screen, None, None, f"episode {episode}  step {t}")]
            panels += [panel(backdrop, values[m][row], scales[m], m) for m in self.methods]
            body = np.concatenate(panels, axis=1)
            steps = (agent.card or {}).get("steps_trained")
            trained = f"{steps:,} steps" if isinstance(steps, int) else "training steps unknown"
            action = inspection.action
            value = "" if inspection.value is None else f"   value {inspection.value:+.2f}"
            chosen = f"action {agent.action_meanings[action]} (p={inspection.action_probs[action]:.2f})"
            active = f"active neurons {inspection.active_fraction:.1%}"
            lines = [f"{name}   ({trained})", f"{chosen}{value}   {active}"]
            rows.append(np.concatenate([caption(body.shape[1], lines), body]))
        return np.concatenate(rows)
