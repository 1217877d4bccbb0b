"""Rock-paper-scissors (PettingZoo ``rps_v2``), simultaneous moves over a fixed number of rounds.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.rps.game import DEFAULT_ROUNDS, MOVES, RPSRenderer, make_rps
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Rock-paper-scissors, 2 players, simultaneous, zero-sum."
GAME = EnvSpec("rps_v2", make_rps, SUMMARY, kind="competitive", source="pettingzoo")

__all__ = ["DEFAULT_ROUNDS", "GAME", "MOVES", "RPSRenderer", "make_rps"]
