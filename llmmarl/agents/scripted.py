"""Scripted (non-LLM) policies: baselines and opponents. Extension by registration.

A policy gets the environment, the seat's observation and the runner's RNG, and returns a legal action id.
Policies for perfect-information games may read the game state; policies for imperfect-information games
must use only the seat's observation (as an LLM agent would).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache
from typing import Protocol, runtime_checkable

from llmmarl.envs.base import Observation, TextEnv


class ScriptedPolicy(Protocol):
    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int: ...


@runtime_checkable
class TalkingPolicy(ScriptedPolicy, Protocol):
    """A scripted policy that may also message its teammates, before its move (as an LLM's turn does).

    The runner delivers the text under the game's :class:`~llmmarl.envs.base.MessageRules`, as it would an LLM's
    message: sanitised, cut to the budget, dropped (and counted) when talk is off or the word is outside the
    vocabulary. A scripted teammate that talks is a teacher: a listener can learn to read its messages before
    it has to learn them together with a learning speaker.
    """

    def message(self, env: TextEnv, obs: Observation, rng: random.Random) -> str | None: ...


_POLICIES: dict[str, tuple[Callable[[], ScriptedPolicy], str]] = {}


def register_policy(name: str, factory: Callable[[], ScriptedPolicy], summary: str) -> None:
    _POLICIES[name] = (factory, summary)


def scripted_policies() -> dict[str, str]:
    """Registered policy names and their one-line summaries."""
    return {name: summary for name, (_, summary) in _POLICIES.items()}


def make_policy(name: str) -> ScriptedPolicy:
    if name not in _POLICIES:
        raise ValueError(f"unknown scripted policy {name!r}; known: {sorted(_POLICIES)}")
    return _POLICIES[name][0]()


def random_policy(env: TextEnv, obs: Observation, rng: random.Random) -> int:
    return rng.choice(obs.action_ids)


# ---- perfect tic-tac-toe -------------------------------------------------------------------------------------
_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def _winner(squares: tuple[int, ...]) -> int:
    for a, b, c in _LINES:
        if squares[a] and squares[a] == squares[b] == squares[c]:
            return squares[a]
    return 0


@cache
def _negamax(squares: tuple[int, ...], me: int) -> int:
    """Value of the position for the player to move (``me`` in {1, 2}): +1 win, 0 draw, -1 loss."""
    if _winner(squares):
        return -1  # the previous mover completed a line
    empty = [i for i, s in enumerate(squares) if s == 0]
    if not empty:
        return 0
    return max(-_negamax((*squares[:i], me, *squares[i + 1 :]), 3 - me) for i in empty)


def minimax_tictactoe(env: TextEnv, obs: Observation, rng: random.Random) -> int:
    """Perfect play for tictactoe_v3 (full-depth negamax, memoised); ties broken at random."""
    board = getattr(getattr(env, "pz", None), "unwrapped", None)
    if board is None or not hasattr(board, "board"):
        raise ValueError("the minimax policy plays tictactoe_v3 only")
    squares = tuple(board.board.squares)
    me = env.possible_agents.index(obs.agent) + 1
    scores = {a: -_negamax((*squares[:a], me, *squares[a + 1 :]), 3 - me) for a in obs.action_ids}
    best = max(scores.values())
    return rng.choice([a for a, s in scores.items() if s == best])


register_policy("random", lambda: random_policy, "uniformly random legal action (any game)")
register_policy("minimax", lambda: minimax_tictactoe, "perfect tic-tac-toe (tictactoe_v3 only)")

# Game-specific bots live in their own modules and register on import (after register_policy is defined).
from llmmarl.agents import bots_kuhn, bots_signal  # noqa: E402, F401


# ---- OpenSpiel's MCTS, for perfect-information OpenSpiel games ---------------------------------------------
class _MCTS:
    """OpenSpiel's MCTSBot with random rollouts. It searches from the true game state, so it is offered only
    for perfect-information games, where that state is exactly what the seat sees."""

    def __init__(self, simulations: int = 200) -> None:
        self.simulations = simulations

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        import numpy as np
        import pyspiel
        from open_spiel.python.algorithms import mcts

        state = getattr(env, "state", None)
        if not isinstance(state, pyspiel.State):
            raise ValueError("the mcts policy plays OpenSpiel games (openspiel:<game>) only")
        game = state.get_game()
        if game.get_type().information != pyspiel.GameType.Information.PERFECT_INFORMATION:
            raise ValueError(f"mcts would see hidden information in {game}; use it on perfect-information games")
        evaluator = mcts.RandomRolloutEvaluator(n_rollouts=1, random_state=np.random.RandomState(rng.getrandbits(32)))
        bot = mcts.MCTSBot(
            game, 2.0, self.simulations, evaluator, random_state=np.random.RandomState(rng.getrandbits(32))
        )
        action = bot.step(state)
        return action if action in obs.action_ids else rng.choice(obs.action_ids)


register_policy("mcts", _MCTS, "OpenSpiel MCTS, 200 simulations (perfect-information openspiel:<game> only)")
