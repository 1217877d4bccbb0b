"""Kuhn poker (OpenSpiel ``kuhn_poker``) told in words, with its Nash-equilibrium bot ``kuhn_nash`` and its measure
``nash_conv``.

``game.py``: the renderer and the factory; ``bots.py``: its scripted bots; ``exploitability.py``: NashConv of a
policy read at the 12 information states. ``GAME`` describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.kuhn_poker.bots import DEFAULT_ALPHA, KuhnNash, kuhn_nash, nash_bet_probability
from llmmarl.envs.games.kuhn_poker.exploitability import NASH_CONV
from llmmarl.envs.games.kuhn_poker.game import CARD_NAMES, KuhnPokerEnv, KuhnPokerRenderer, make_kuhn_poker
from llmmarl.envs.registry import BotSpec, EnvSpec

SUMMARY = "Kuhn poker (OpenSpiel), 3 cards, 2 players, zero-sum."
BOTS = (BotSpec("kuhn_nash", KuhnNash, "Kuhn poker Nash equilibrium (alpha = 1/6; kuhn_poker only)"),)
GAME = EnvSpec(
    "kuhn_poker", make_kuhn_poker, SUMMARY, kind="competitive", source="openspiel", bots=BOTS, measures=(NASH_CONV,)
)

__all__ = [
    "CARD_NAMES",
    "DEFAULT_ALPHA",
    "GAME",
    "NASH_CONV",
    "KuhnNash",
    "KuhnPokerEnv",
    "KuhnPokerRenderer",
    "kuhn_nash",
    "make_kuhn_poker",
    "nash_bet_probability",
]
