"""A Gymnasium wrapper that shows, at every step, what the agent's network does there.

It changes nothing of the environment: observations, rewards and termination pass through.
It only adds ``info["inspection"]``, computed on the observation the agent acts on next.
"""

from __future__ import annotations

import gymnasium as gym

from .agents import Agent, check_fits, load_agent
from .inspection import DEFAULT_METHODS, StepInspection, check_methods, inspect_frames, resolve_device


class InsensWrapper(gym.Wrapper):
    """Adds ``info["inspection"]`` (an :class:`StepInspection`) on ``reset`` and ``step``.

    >>> env = InsensWrapper(agent.make_env(), agent)  # agent = ri.load_agent(...)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(info["inspection"].action)

    ``every=K`` computes the attribution maps on every K-th step only (the policy outputs on
    every step); ``device="auto"`` runs the network and the engine on CUDA when there is one.
    """

    def __init__(self, env: gym.Env, agent: Agent | str, methods=DEFAULT_METHODS, device: str = "auto",
                 every: int = 1) -> None:
        super().__init__(env)
        self.agent = (load_agent(agent) if isinstance(agent, str) else agent).to(resolve_device(device))
        check_fits(self.agent, env)
        self.methods = check_methods(methods)
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every, self.steps = every, 0

    def _inspect(self, observation) -> StepInspection:
        with_maps = [self.steps % self.every == 0]
        return inspect_frames(self.agent, observation[None], self.methods, with_maps)[0]

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.steps = 0
        return observation, {**info, "inspection": self._inspect(observation)}

    def step(self, action):
        """``env.step``, adding ``info["inspection"]`` on the new observation unless the episode ended
        (no action is chosen there)."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if not (terminated or truncated):
            info = {**info, "inspection": self._inspect(observation)}
        return observation, reward, terminated, truncated, info
