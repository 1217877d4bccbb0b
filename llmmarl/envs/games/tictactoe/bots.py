"""Perfect tic-tac-toe (``tictactoe_v3``), offered as the scripted policy ``minimax``.

A full-depth negamax over the board, memoised: tic-tac-toe has few enough positions to solve at every move. The
game is one of perfect information, so the bot may read the board from the PettingZoo env.
"""

from __future__ import annotations

import random
from functools import cache

from llmmarl.envs.base import Observation, TextEnv

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
