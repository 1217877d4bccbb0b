"""Signal (``signal_v0``): a cooperative speaker-listener game that only messages win, with its truthful speaker.

``aec.py``: the PettingZoo env; ``game.py``: the renderer and the factory; ``bots.py``: its scripted bots. ``GAME``
describes the game to the registry, :mod:`llmmarl.envs.games`.
"""

from llmmarl.envs.games.signal.aec import ITEM_NAMES, LISTENER, SPEAKER, SignalEnv, env, raw_env
from llmmarl.envs.games.signal.bots import SignalTruthful
from llmmarl.envs.games.signal.game import SYMBOLS, VOCABULARIES, SignalRenderer, make_signal
from llmmarl.envs.registry import BotSpec, EnvSpec

SUMMARY = "Signal: speaker sees a secret color, listener must pick it; only messages beat chance. Cooperative."
BOTS = (BotSpec("signal_truthful", SignalTruthful, "names the secret goal in its message (signal_v0 speaker only)"),)
GAME = EnvSpec("signal_v0", make_signal, SUMMARY, kind="cooperative", bots=BOTS)

__all__ = [
    "GAME",
    "ITEM_NAMES",
    "LISTENER",
    "SPEAKER",
    "SYMBOLS",
    "VOCABULARIES",
    "SignalEnv",
    "SignalRenderer",
    "SignalTruthful",
    "env",
    "make_signal",
    "raw_env",
]
