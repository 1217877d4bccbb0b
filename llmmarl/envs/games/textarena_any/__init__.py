"""Any TextArena game by id: ``make("textarena:<env-id>")``, free-text moves (the ``textarena`` extra).

See :mod:`llmmarl.envs.textarena` for how a TextArena game maps onto a text environment, and
``docs/textarena.md`` for which games run offline.
"""

from llmmarl.envs.registry import FamilySpec
from llmmarl.envs.textarena import make_textarena

FAMILY = FamilySpec(prefix="textarena", factory=make_textarena)

__all__ = ["FAMILY"]
