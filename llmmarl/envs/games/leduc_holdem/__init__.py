"""Leduc Hold'em (PettingZoo ``leduc_holdem_v4``) shown from one seat's own observation.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.leduc_holdem.game import ACTIONS, RAISE_BY_ROUND, RANKS, LeducHoldemRenderer, make_leduc_holdem
from llmmarl.envs.registry import EnvSpec

GAME = EnvSpec(
    name="leduc_holdem_v4",
    factory=make_leduc_holdem,
    summary="Leduc Hold'em poker, 2 players, hidden cards, zero-sum.",
    kind="competitive",
    source="pettingzoo",
)

__all__ = ["ACTIONS", "GAME", "RAISE_BY_ROUND", "RANKS", "LeducHoldemRenderer", "make_leduc_holdem"]
