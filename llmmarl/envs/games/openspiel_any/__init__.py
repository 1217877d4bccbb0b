"""Any OpenSpiel game by name: ``make("openspiel:<game>")`` with the generic renderer, and the ``mcts`` bot."""

from llmmarl.envs.games.openspiel_any.bots import MCTS
from llmmarl.envs.openspiel import make_openspiel
from llmmarl.envs.registry import BotSpec, FamilySpec

FAMILY = FamilySpec(
    prefix="openspiel",
    factory=make_openspiel,
    bots=(BotSpec("mcts", MCTS, "OpenSpiel MCTS, 200 simulations (perfect-information openspiel:<game> only)"),),
)

__all__ = ["FAMILY", "MCTS"]
