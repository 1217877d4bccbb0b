"""The contract of a scripted player (a bot), and how a game names the bots that come with it.

A bot gets the environment, the seat's observation and the runner's RNG, and returns a legal action id. Bots for
perfect-information games may read the game state; bots for imperfect-information games must use only the
seat's observation (as an LLM agent would). A game lists its bots in its :class:`~llmmarl.envs.registry.EnvSpec`;
:mod:`llmmarl.agents.scripted` offers them by name, with the policies that play any game.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from llmmarl.envs.base import Action, Observation, TextEnv


class ScriptedPolicy(Protocol):
    """Returns a legal action id; in a free-text game (``obs.free_text`` set) it may return the move's text."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> Action: ...


@runtime_checkable
class TalkingPolicy(ScriptedPolicy, Protocol):
    """A scripted policy that may also message its teammates, before its move (as an LLM's turn does).

    The runner delivers the text under the game's :class:`~llmmarl.envs.base.MessageRules`, as it would an LLM's
    message: sanitised, cut to the budget, dropped (and counted) when talk is off or the word is outside the
    vocabulary. A scripted teammate that talks is a teacher: a listener can learn to read its messages before
    it has to learn them together with a learning speaker.
    """

    def message(self, env: TextEnv, obs: Observation, rng: random.Random) -> str | None: ...


@runtime_checkable
class ExactPolicy(ScriptedPolicy, Protocol):
    """A scripted policy that can say how likely each legal move is, so that its policy is read exactly
    (:func:`policy_probabilities`) instead of counted over sampled moves."""

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        """P(each action of ``obs.action_ids``), same order; they sum to 1."""
        ...


def policy_probabilities(policy: ScriptedPolicy, env: TextEnv, obs: Observation) -> list[float] | None:
    """The exact move probabilities of ``policy`` at ``obs``, or None when it cannot tell them."""
    if not isinstance(policy, ExactPolicy):
        return None
    probs = [float(p) for p in policy.probabilities(env, obs)]
    if len(probs) != len(obs.action_ids) or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-9:
        raise ValueError(f"{type(policy).__name__}.probabilities gave {probs} for {len(obs.action_ids)} moves")
    return probs


@dataclass(frozen=True)
class BotSpec:
    """A scripted player that comes with a game, offered by name like any scripted policy (``llmmarl agents``)."""

    name: str
    #: Builds the bot; called once per seat that plays it, so a bot may keep state for one game.
    factory: Callable[[], ScriptedPolicy]
    summary: str
