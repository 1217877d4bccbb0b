"""Connect Four (PettingZoo ``connect_four_v3``) with a drawn 6x7 board and columns numbered 1-7."""

from __future__ import annotations

from typing import Any

import numpy as np

# The implementation module, not the ``connect_four_v3`` shim: in PettingZoo 1.27 the shim warns
# DeprecationWarning on import. Same env (v3 of this installed version).
from pettingzoo.classic.connect_four import connect_four

from llmmarl.envs.games.tictactoe.game import ENDS_WITHIN_2
from llmmarl.envs.pettingzoo import AECTextEnv, PettingZooTextEnv, Renderer

ROWS, COLUMNS = 6, 7
#: Column numbers as printed above and below the board; the action labels are these numbers.
_HEADER = " " + " ".join(str(c + 1) for c in range(COLUMNS))


class ConnectFourRenderer(Renderer):
    description = (
        "Connect Four on a board of 6 rows and 7 columns; the first player is X, the second is O. Players take "
        "turns dropping one disc into a column that is not full, where it falls to the lowest empty cell; your "
        "move is the column number, from 1 (left) to 7 (right). Four of your discs in a row horizontally, "
        "vertically or diagonally win (+1, the loser gets -1); a full board is a draw (0)."
    )

    def observation(self, env: PettingZooTextEnv, agent: str, raw: Any) -> str:
        # (6, 7, 2): row 0 is the top row; [..., 0] holds this seat's discs, [..., 1] the opponent's.
        planes = np.asarray(raw["observation"])
        me, them = ("X", "O") if env.possible_agents.index(agent) == 0 else ("O", "X")
        lines = [_HEADER]
        for r in range(ROWS):
            cells = [me if planes[r, c, 0] else them if planes[r, c, 1] else "." for c in range(COLUMNS)]
            lines.append(" " + " ".join(cells))
        lines.append(_HEADER)
        board = "\n".join(lines)
        return f"You are {me}, your opponent is {them}. Board (top row first, '.' is empty):\n{board}"

    def action_label(self, env: PettingZooTextEnv, agent: str, action: int) -> str:
        # Bare 1-based numbers, like tic-tac-toe's cells: one short token that a small model copies reliably
        # and that matches the numbers printed on the board.
        return str(action + 1)


def make_connect_four() -> AECTextEnv:
    env = AECTextEnv("connect_four_v3", connect_four.env, ConnectFourRenderer())
    env.forecast = ENDS_WITHIN_2  # how the game stands after this move and the reply
    env.cloneable = True  # the board and the turn live in the env's attributes (copy_in_play)
    return env
