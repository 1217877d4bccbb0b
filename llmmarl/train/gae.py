"""Generalised advantage estimation over one agent's turns in one game (pure Python, no model).

A multi-agent game interleaves the seats' turns; for PPO each seat's own turns form its trajectory, and the other
seats' moves are part of the environment between two of them. :func:`turn_rewards` gives every sample of such a
trajectory its reward and whether the trajectory's credit ends there; :func:`gae` turns rewards and the critic's
values into advantages and returns.

Rewards (the weighted terms of :func:`llmmarl.train.rollout.reward_terms`)::

    every answer        format + prediction + message terms (they belong to that answer)
    the last answer     + the game term: the seat's episode return (the game pays at the end)
    an unusable answer  + the game term: the game's forfeit reward, and its credit ends there

An unusable answer is played by a fallback (a random legal move) or re-asked; what happens after it is not its
doing, so - as in GRPO's rewards - it earns the forfeit reward and does not bootstrap from later turns. The turns
before it still bootstrap from its state's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmmarl.train.rollout import TurnSample


def turn_rewards(trajectory: Sequence[TurnSample], weights: Mapping[str, float]) -> tuple[list[float], list[bool]]:
    """Per-sample rewards and terminal flags of one seat's samples of one game, in the order they were played."""
    rewards, dones = [], []
    for i, s in enumerate(trajectory):
        terminal = not s.usable or i == len(trajectory) - 1
        r = sum(w * s.terms[k] for k, w in weights.items() if k != "game")
        if terminal:
            # terms["game"] is the episode return for a usable answer and the forfeit reward otherwise.
            r += weights["game"] * s.terms["game"]
        rewards.append(r)
        dones.append(terminal)
    return rewards, dones


def gae(
    rewards: Sequence[float], values: Sequence[float], dones: Sequence[bool], gamma: float, lam: float
) -> tuple[list[float], list[float]]:
    """Advantages and returns (advantage + value) of one trajectory.

    ``dones[i]``: no bootstrapping from step ``i + 1``; the last step never bootstraps (the game is over)::

        delta_i = r_i + gamma * V_{i+1} * (1 - done_i) - V_i
        A_i     = delta_i + gamma * lam * (1 - done_i) * A_{i+1}
    """
    n = len(rewards)
    if not len(values) == len(dones) == n:
        raise ValueError(f"{n} rewards, {len(values)} values, {len(dones)} dones: one each per step")
    advantages = [0.0] * n
    running = 0.0
    for i in reversed(range(n)):
        cont = 0.0 if dones[i] or i == n - 1 else 1.0
        next_value = values[i + 1] if cont else 0.0
        delta = rewards[i] + gamma * next_value - values[i]
        running = delta + gamma * lam * cont * running
        advantages[i] = running
    return advantages, [a + v for a, v in zip(advantages, values, strict=True)]
