"""Probe ``probe_delayed``: two decisions; only the first decides the reward, which arrives after the second. A
failure points at returns carried across turns."""

from llmmarl.envs.bots import BotSpec
from llmmarl.envs.games.probes.delayed.game import Delayed, DelayedOptimal
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Probe: two decisions; the first word (drawn by the seed keyword) decides the reward paid at the end."
BOTS = (BotSpec("probe_delayed_optimal", DelayedOptimal, "plays the paying first word (probe_delayed only)"),)
GAME = EnvSpec("probe_delayed", Delayed, SUMMARY, kind="cooperative", bots=BOTS)

__all__ = ["GAME", "Delayed", "DelayedOptimal"]
