"""A new game as one package: Nim with one pile (``game.py``) and a perfect player for it (``bots.py``).

``GAME`` names them. A built-in game is listed in ``llmmarl/envs/games/__init__.py``; a game of your own is
registered by one call, ``llmmarl.envs.register_game(GAME)``, in the program that plays it.
"""

from llmmarl.envs import BotSpec, EnvSpec

from .bots import perfect_nim
from .game import Nim

GAME = EnvSpec(
    name="toy_nim",
    factory=Nim,
    summary="Nim with one pile (a worked example of adding a game)",
    kind="competitive",
    bots=(BotSpec("perfect_nim", lambda: perfect_nim, "perfect one-pile Nim (toy_nim only)"),),
)

__all__ = ["GAME", "Nim", "perfect_nim"]
