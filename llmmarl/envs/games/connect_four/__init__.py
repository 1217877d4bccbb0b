"""Connect Four (PettingZoo ``connect_four_v3``): a drawn board, columns numbered 1-7.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.connect_four.game import COLUMNS, ROWS, ConnectFourRenderer, make_connect_four
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Connect Four, 2 players, zero-sum."
GAME = EnvSpec("connect_four_v3", make_connect_four, SUMMARY, kind="competitive", source="pettingzoo")

__all__ = ["COLUMNS", "GAME", "ROWS", "ConnectFourRenderer", "make_connect_four"]
