"""Probe ``probe_coordination``: two learners choose at once, each from its own words; both are paid when their
choices are partners. A failure points at per-adapter updates and multi-learner credit."""

from llmmarl.envs.bots import BotSpec
from llmmarl.envs.games.probes.coordination.game import Coordination, CoordinationOptimal
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Probe: two seats choose at once from their own words; both score 1 when the two words are partners."
BOTS = (
    BotSpec(
        "probe_coordination_optimal", CoordinationOptimal, "plays the first partner pair (probe_coordination only)"
    ),
)
GAME = EnvSpec("probe_coordination", Coordination, SUMMARY, kind="cooperative", bots=BOTS)

__all__ = ["GAME", "Coordination", "CoordinationOptimal"]
