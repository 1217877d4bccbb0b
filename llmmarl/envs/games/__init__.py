"""The built-in games: each is a package in this folder, and this module is the one place that lists them.

A game package holds everything of one game: its renderer and factory (``game.py``), its scripted bots
(``bots.py``), and ``GAME``, the :class:`~llmmarl.envs.registry.EnvSpec` that names them. Adding a built-in game
is one package and one line in ``BUILTIN_GAMES``; :mod:`llmmarl.envs.registry` registers the lists below the first
time a game or a bot is asked for. Nothing registers itself on import.
"""

from llmmarl.envs.games import (
    bargaining,
    connect_four,
    hanabi,
    kuhn_poker,
    leduc_holdem,
    openspiel_any,
    rps,
    signal,
    textarena_any,
    tictactoe,
)
from llmmarl.envs.games.probes import bandit as probe_bandit
from llmmarl.envs.games.probes import contextual as probe_contextual
from llmmarl.envs.games.probes import coordination as probe_coordination
from llmmarl.envs.games.probes import delayed as probe_delayed
from llmmarl.envs.games.probes import pennies as probe_pennies
from llmmarl.envs.games.probes import speaker_listener as probe_speaker_listener
from llmmarl.envs.registry import EnvSpec, FamilySpec

#: The built-in games. Their bots are offered (``llmmarl agents``) in this order, after ``random``.
BUILTIN_GAMES: tuple[EnvSpec, ...] = (
    tictactoe.GAME,
    kuhn_poker.GAME,
    signal.GAME,
    bargaining.GAME,
    connect_four.GAME,
    hanabi.GAME,
    leduc_holdem.GAME,
    rps.GAME,
    probe_bandit.GAME,
    probe_contextual.GAME,
    probe_delayed.GAME,
    probe_coordination.GAME,
    probe_speaker_listener.GAME,
    probe_pennies.GAME,
)

#: Families of games reached by a name prefix, e.g. ``openspiel:liars_dice``; their bots come after the games'.
BUILTIN_FAMILIES: tuple[FamilySpec, ...] = (openspiel_any.FAMILY, textarena_any.FAMILY)

__all__ = ["BUILTIN_FAMILIES", "BUILTIN_GAMES"]
