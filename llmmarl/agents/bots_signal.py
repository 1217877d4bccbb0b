"""Moved to :mod:`llmmarl.envs.games.signal.bots` (the signal game's package); kept so old imports work."""

from llmmarl.envs.games.signal.bots import SignalTruthful

__all__ = ["SignalTruthful"]
