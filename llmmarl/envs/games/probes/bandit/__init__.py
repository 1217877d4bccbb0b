"""Probe ``probe_bandit``: one decision, one word pays 1, the others 0. A failure points at the sign or the scale of
the update."""

from llmmarl.envs.bots import BotSpec
from llmmarl.envs.games.probes.bandit.game import Bandit, BanditOptimal
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Probe: one decision, one word pays 1 (drawn by the seed keyword). Known answer: always that word."
BOTS = (BotSpec("probe_bandit_optimal", BanditOptimal, "plays the paying word (probe_bandit only)"),)
GAME = EnvSpec("probe_bandit", Bandit, SUMMARY, kind="cooperative", bots=BOTS)

__all__ = ["GAME", "Bandit", "BanditOptimal"]
