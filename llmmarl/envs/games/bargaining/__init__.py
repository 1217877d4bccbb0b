"""Bargaining (OpenSpiel ``bargaining``): split a pool of items with private values.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.bargaining.game import ITEMS, BargainingRenderer, items_text, make_bargaining
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Bargaining (OpenSpiel): split books, hats and balls with private values, 2 players, general-sum."
GAME = EnvSpec("bargaining", make_bargaining, SUMMARY, kind="general-sum", source="openspiel")

__all__ = ["GAME", "ITEMS", "BargainingRenderer", "items_text", "make_bargaining"]
