"""Probe ``probe_contextual``: the observation names one of 3-4 cues; the word matching the cue pays. A failure
points at conditioning on the observation."""

from llmmarl.envs.bots import BotSpec
from llmmarl.envs.games.probes.contextual.game import Contextual, ContextualOptimal
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Probe: the observation names a cue; the word mapped to it (drawn by the seed keyword) pays 1."
BOTS = (BotSpec("probe_contextual_optimal", ContextualOptimal, "plays the cue's word (probe_contextual only)"),)
GAME = EnvSpec("probe_contextual", Contextual, SUMMARY, kind="cooperative", bots=BOTS)

__all__ = ["GAME", "Contextual", "ContextualOptimal"]
