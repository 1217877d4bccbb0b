"""Tic-tac-toe (PettingZoo ``tictactoe_v3``): a drawn board, cells numbered 1-9, and the perfect bot ``minimax``.

``game.py``: the renderer and the factory; ``bots.py``: its scripted bots. ``GAME`` describes the game to the
registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.tictactoe.bots import minimax_tictactoe
from llmmarl.envs.games.tictactoe.game import ENDS_WITHIN_2, TicTacToeRenderer, make_tictactoe
from llmmarl.envs.registry import BotSpec, EnvSpec

GAME = EnvSpec(
    name="tictactoe_v3",
    factory=make_tictactoe,
    summary="Tic-tac-toe, 2 players, zero-sum.",
    kind="competitive",
    source="pettingzoo",
    bots=(BotSpec("minimax", lambda: minimax_tictactoe, "perfect tic-tac-toe (tictactoe_v3 only)"),),
)

__all__ = ["ENDS_WITHIN_2", "GAME", "TicTacToeRenderer", "make_tictactoe", "minimax_tictactoe"]
