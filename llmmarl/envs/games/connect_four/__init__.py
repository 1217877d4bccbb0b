"""Connect Four (PettingZoo ``connect_four_v3``): a drawn board, columns numbered 1-7.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.connect_four.game import COLUMNS, ROWS, ConnectFourRenderer, make_connect_four
from llmmarl.envs.registry import EnvSpec

GAME = EnvSpec(
    name="connect_four_v3",
    factory=make_connect_four,
    summary="Connect Four, 2 players, zero-sum.",
    kind="competitive",
    source="pettingzoo",
)

__all__ = ["COLUMNS", "GAME", "ROWS", "ConnectFourRenderer", "make_connect_four"]
