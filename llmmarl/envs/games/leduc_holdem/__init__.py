"""Leduc Hold'em (PettingZoo ``leduc_holdem_v4``) shown from one seat's own observation.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.leduc_holdem.game import ACTIONS, RAISE_BY_ROUND, RANKS, LeducHoldemRenderer, make_leduc_holdem
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Leduc Hold'em poker, 2 players, hidden cards, zero-sum."
GAME = EnvSpec("leduc_holdem_v4", make_leduc_holdem, SUMMARY, kind="competitive", source="pettingzoo")

__all__ = ["ACTIONS", "GAME", "RAISE_BY_ROUND", "RANKS", "LeducHoldemRenderer", "make_leduc_holdem"]
