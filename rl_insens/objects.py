"""Where a game's objects are, read from the console's RAM, and how to move them there.

The RAM addresses are AtariARI's annotations (Anand et al., NeurIPS 2019); the offsets and
sizes that turn them into boxes on the 210x160 screen were measured against the objects'
pixels, and ``tests/test_objects.py`` checks them on frames of real play before any report
relies on them. A box carries a margin of two pixels, since the screen may lag the RAM by a
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN = 2
"""Pixels added around each object's box."""


@dataclass(frozen=True)
class GameObject:
    """One object: its position in RAM and its box on the screen relative to that position."""

    name: str
    x_address: int
    y_address: int | None
    """``None`` for an object that only moves sideways (its row is ``y_offset``)."""
    x_offset: int
    y_offset: int
    width: int
    height: int
    colour: tuple[int, int, int]
    """Its colour on the screen, to find it in the pixels."""
    rows: tuple[int, int]
    """The screen rows it can be in (where its colour means this object)."""
    movable: bool = True
    """Whether editing its RAM moves it. The paddles follow the controller: the games rewrite
    their positions every frame, so an edit of their RAM changes nothing on the screen."""

    def box(self, ram: np.ndarray, margin: int = MARGIN) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` on the screen, bottom and right exclusive."""
        x = int(ram[self.x_address]) + self.x_offset
        y = self.y_offset + (int(ram[self.y_address]) if self.y_address is not None else 0)
        return y - margin, y + self.height + margin, x - margin, x + self.width + margin

    def pixels(self, screen: np.ndarray) -> np.ndarray:
        """A mask of the screen pixels of this object's colour within its rows."""
        mask = np.zeros(screen.shape[:2], bool)
        top, bottom = self.rows
        mask[top:bottom] = (screen[top:bottom] == self.colour).all(-1)
        return mask


OBJECTS: dict[str, tuple[GameObject, ...]] = {
    "Pong": (
        GameObject("ball", 49, 54, -49, -14, 2, 4, (236, 236, 236), (34, 194)),
        GameObject("player", 46, 51, -48, -14, 4, 16, (92, 186, 92), (34, 194), movable=False),
        GameObject("enemy", 45, 50, -48, -15, 4, 16, (213, 130, 74), (34, 194), movable=False),
    ),
    "Breakout": (
        GameObject("ball", 99, 101, -49, 9, 2, 4, (200, 72, 72), (93, 189)),
        GameObject("player", 72, None, -47, 189, 16, 5, (200, 72, 72), (189, 194), movable=False),
    ),
}
"""Per game (ALE's name, as :attr:`rl_insens.envs.AtariSettings.game`)."""


def objects_of(game: str) -> tuple[GameObject, ...]:
    """The game's object table, or an error naming the games that have one."""
    if game not in OBJECTS:
        raise ValueError(f"no object table for {game}; games with one: {', '.join(sorted(OBJECTS))}")
    return OBJECTS[game]


def observation_mask(boxes, screen_shape: tuple[int, int], size: int = 84) -> np.ndarray:
    """The boxes (screen coordinates) as a mask over a ``size`` x ``size`` observation frame.

    A cell is on when its footprint on the screen overlaps a box, so a small object is never
    lost in the resize."""
    height, width = screen_shape
    mask = np.zeros((size, size), bool)
    for top, bottom, left, right in boxes:
        r0, r1 = int(np.floor(max(top, 0) * size / height)), int(np.ceil(min(bottom, height) * size / height))
        c0, c1 = int(np.floor(max(left, 0) * size / width)), int(np.ceil(min(right, width) * size / width))
        mask[r0:max(r1, r0), c0:max(c1, c0)] = True
    return mask
