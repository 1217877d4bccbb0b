"""Scripted (non-LLM) policies: baselines and opponents, offered by name. Extension by registration.

A policy gets the environment, the seat's observation and the runner's RNG, and returns a legal action id; its
contract (:class:`ScriptedPolicy`, :class:`TalkingPolicy`) is in :mod:`llmmarl.envs.bots`, next to the games.
``random`` plays any game. The bots of one game live in its package (e.g. ``minimax`` in
``llmmarl/envs/games/tictactoe/bots.py``) and are listed with the game in :mod:`llmmarl.envs.games`; this module
offers them by name together with the policies added by :func:`register_policy`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from llmmarl.envs.base import Action, Observation, TextEnv, random_action
from llmmarl.envs.bots import ScriptedPolicy
from llmmarl.envs.registry import game_bots

__all__ = [
    "make_policy",
    "random_policy",
    "register_policy",
    "scripted_policies",
]


_Entry = tuple[Callable[[], ScriptedPolicy], str]
#: Policies for any game; the games' own bots (``EnvSpec.bots``) come from the game registry.
_GENERIC: dict[str, _Entry] = {}
#: Policies added with :func:`register_policy`; a name here replaces a built-in one.
_POLICIES: dict[str, _Entry] = {}


def register_policy(name: str, factory: Callable[[], ScriptedPolicy], summary: str) -> None:
    """Offer ``factory()`` as the scripted policy ``name``. A policy for one game is better one of its bots
    (``EnvSpec.bots`` in :mod:`llmmarl.envs.registry`), so that it comes and goes with the game."""
    _POLICIES[name] = (factory, summary)


def _policies() -> dict[str, _Entry]:
    """Every policy by name: the generic ones, then the registered games' bots, then :func:`register_policy`'s."""
    merged = dict(_GENERIC)
    merged.update((bot.name, (bot.factory, bot.summary)) for bot in game_bots())
    merged.update(_POLICIES)
    return merged


def scripted_policies() -> dict[str, str]:
    """Registered policy names and their one-line summaries."""
    return {name: summary for name, (_, summary) in _policies().items()}


def make_policy(name: str) -> ScriptedPolicy:
    policies = _policies()
    if name not in policies:
        raise ValueError(f"unknown scripted policy {name!r}; known: {sorted(policies)}")
    return policies[name][0]()


class RandomPolicy:
    """Uniformly random among the legal moves; its probabilities are known (read exactly). In a free-text game
    without listed moves it plays a random quoted move (see ``random_action``)."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> Action:
        return random_action(obs, rng)

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        return [1.0 / len(obs.action_ids)] * len(obs.action_ids)


random_policy = RandomPolicy()

_GENERIC["random"] = (
    lambda: random_policy,
    "uniformly random legal action (any game; in free-text games a random listed or quoted move)",
)
