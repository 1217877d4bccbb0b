"""Probe ``probe_pennies``: matching pennies in self-play, zero-sum; the only equilibrium is 50/50. A failure
points at stability under non-stationarity."""

from llmmarl.envs.bots import BotSpec
from llmmarl.envs.games.probes.pennies.game import Pennies, PenniesOptimal
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Probe: matching pennies with two neutral words, zero-sum. Known answer: each word half the time."
BOTS = (BotSpec("probe_pennies_optimal", PenniesOptimal, "each word with probability 1/2 (probe_pennies)"),)
GAME = EnvSpec("probe_pennies", Pennies, SUMMARY, kind="competitive", bots=BOTS)

__all__ = ["GAME", "Pennies", "PenniesOptimal"]
