"""Tic-tac-toe (PettingZoo ``tictactoe_v3``) with a drawn board and cells numbered 1-9."""

from __future__ import annotations

from typing import Any

import numpy as np
from pettingzoo.classic import tictactoe_v3

from llmmarl.envs.base import ForecastSpec
from llmmarl.envs.pettingzoo import AECTextEnv, PettingZooTextEnv, Renderer


class TicTacToeRenderer(Renderer):
    description = (
        "Tic-tac-toe on a 3x3 grid. Players take turns marking one empty cell; the first player is X, the "
        "second is O. Three marks in a row, column or diagonal win (+1, the loser gets -1); a full board "
        "is a draw (0). Cells are numbered 1-9, left to right, top to bottom."
    )

    def observation(self, env: PettingZooTextEnv, agent: str, raw: Any) -> str:
        planes = np.asarray(raw["observation"])  # (3, 3, 2): [..., 0] this seat's marks, [..., 1] the opponent's
        me, them = ("X", "O") if env.possible_agents.index(agent) == 0 else ("O", "X")
        rows = []
        for r in range(3):
            cells = []
            for c in range(3):
                cells.append(me if planes[r, c, 0] else them if planes[r, c, 1] else str(3 * r + c + 1))
            rows.append(" " + " | ".join(cells))
        board = "\n---+---+---\n".join(rows)
        return f"You are {me}. Board (numbers are empty cells):\n{board}"

    def action_label(self, env: PettingZooTextEnv, agent: str, action: int) -> str:
        return str(action + 1)


#: Forecast: how the game stands two moves from now (after this move and the reply): ended, and how, or not.
ENDS_WITHIN_2 = ForecastSpec(target="ends_within", labels=("win", "draw", "loss", "continues"), horizon=2)


def make_tictactoe() -> AECTextEnv:
    env = AECTextEnv("tictactoe_v3", tictactoe_v3.env, TicTacToeRenderer())
    env.forecast = ENDS_WITHIN_2
    env.cloneable = True  # the board, the turn and the winner live in the env's attributes (copy_in_play)
    return env
