"""Hanabi (``hanabi_v5``, OpenSpiel's ``hanabi``): cooperative, hints are moves, no free talk.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.hanabi.game import COLOR_LETTERS, HanabiRenderer, describe_hanabi, make_hanabi
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Hanabi (OpenSpiel; default 2 colors, ranks 1-3, 3-card hands, 2 players), cooperative, no free talk."
GAME = EnvSpec("hanabi_v5", make_hanabi, SUMMARY, kind="cooperative", source="openspiel")

__all__ = ["COLOR_LETTERS", "GAME", "HanabiRenderer", "describe_hanabi", "make_hanabi"]
