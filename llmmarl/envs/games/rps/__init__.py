"""Rock-paper-scissors (PettingZoo ``rps_v2``), simultaneous moves over a fixed number of rounds.

``game.py``: the renderer and the factory. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.rps.game import DEFAULT_ROUNDS, MOVES, RPSRenderer, make_rps
from llmmarl.envs.registry import EnvSpec

GAME = EnvSpec(
    name="rps_v2",
    factory=make_rps,
    summary="Rock-paper-scissors, 2 players, simultaneous, zero-sum.",
    kind="competitive",
    source="pettingzoo",
)

__all__ = ["DEFAULT_ROUNDS", "GAME", "MOVES", "RPSRenderer", "make_rps"]
