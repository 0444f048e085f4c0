"""Counterfactual interventions on the game state (Atrey et al., ICLR 2020).

Move an object by editing the console's RAM, play a few no-ops, and compare what the policy
sees and does with what it would have seen without the edit. Working on the emulator's own
memory, this runs on the real ALE games. An edit the game undoes (or that moves nothing on
the screen) is reported as not moved, so that callers can drop and count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from .env_state import capture, restore
from .objects import GameObject, objects_of

NOOPS = 3
"""Agent steps of no-op after the edit, as Atrey et al. did, so the edit reaches every stacked frame
that the next decisions see and the game's own logic has run on it."""
NOOP = 0
"""ALE's action 0 is NOOP in every game."""


@dataclass(frozen=True)
class Move:
    """Move ``object`` by ``pixels`` along ``axis`` ("x" or "y")."""

    object: str
    axis: str
    pixels: int


@dataclass
class Outcome:
    """The game ``NOOPS`` steps on, as it is and with the moves made."""

    moves: tuple[Move, ...]
    observation: np.ndarray
    screen: np.ndarray
    edited_observation: np.ndarray
    edited_screen: np.ndarray
    moved: bool
    """Every moved object's pixels are on the edited screen, and not where they are unedited."""


def standard_moves(game: str, pixels: tuple[int, ...] = (-10, -5, 5, 10)) -> list[Move]:
    """Each movable object moved each way along each axis it has in RAM (5-15 px, as Atrey et al.)."""
    moves = []
    for obj in objects_of(game):
        if obj.movable:
            axes = ("x", "y") if obj.y_address is not None else ("x",)
            moves += [Move(obj.name, axis, p) for axis in axes for p in pixels]
    return moves


def _object(game: str, name: str) -> GameObject:
    table = {o.name: o for o in objects_of(game)}
    if name not in table:
        raise ValueError(f"{game} has no object {name!r}; its objects: {', '.join(table)}")
    return table[name]


def _play_noops(env: gym.Env, noops: int) -> tuple[np.ndarray, np.ndarray]:
    obs = None
    for _ in range(noops):
        obs, *_ = env.step(NOOP)
    return obs, env.unwrapped.ale.getScreenRGB()


def intervene(env: gym.Env, game: str, moves: tuple[Move, ...] | list[Move], noops: int = NOOPS) -> Outcome:
    """From the environment's current state, play ``noops`` no-ops as it is and with ``moves``
    made in RAM; the environment is left in the state it was in."""
    ale = env.unwrapped.ale
    state = capture(env)
    try:
        observation, screen = _play_noops(env, noops)
        restore(env, state)
        ram = ale.getRAM()
        for move in moves:
            obj = _object(game, move.object)
            address = obj.x_address if move.axis == "x" else obj.y_address
            if address is None:
                raise ValueError(f"{move.object} in {game} does not move along {move.axis}")
            ale.setRAM(address, int(np.clip(int(ram[address]) + move.pixels, 0, 255)))
        edited_observation, edited_screen = _play_noops(env, noops)
    finally:
        restore(env, state)
    moved = all(_has_moved(_object(game, m.object), screen, edited_screen) for m in moves)
    return Outcome(tuple(moves), observation, screen, edited_observation, edited_screen, moved)


def _has_moved(obj: GameObject, before: np.ndarray, after: np.ndarray) -> bool:
    was, now = obj.pixels(before), obj.pixels(after)
    return bool(now.any()) and not np.array_equal(was, now)
