"""Tic-tac-toe (PettingZoo ``tictactoe_v3``): a drawn board, cells numbered 1-9, and the perfect bot ``minimax``.

``game.py``: the renderer and the factory; ``bots.py``: its scripted bots. ``GAME`` describes the game to the
registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.tictactoe.bots import minimax_tictactoe
from llmmarl.envs.games.tictactoe.game import ENDS_WITHIN_2, TicTacToeRenderer, make_tictactoe
from llmmarl.envs.registry import BotSpec, EnvSpec

SUMMARY = "Tic-tac-toe, 2 players, zero-sum."
BOTS = (BotSpec("minimax", lambda: minimax_tictactoe, "perfect tic-tac-toe (tictactoe_v3 only)"),)
GAME = EnvSpec("tictactoe_v3", make_tictactoe, SUMMARY, kind="competitive", source="pettingzoo", bots=BOTS)

__all__ = ["ENDS_WITHIN_2", "GAME", "TicTacToeRenderer", "make_tictactoe", "minimax_tictactoe"]
