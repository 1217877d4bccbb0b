"""How a game wrapped from PettingZoo or OpenSpiel looks as text: the one renderer contract.

A :class:`Renderer` turns a seat's view into the text an LLM reads and names its moves. Every wrapped game uses
it, PettingZoo's (:mod:`llmmarl.envs.pettingzoo`) and OpenSpiel's (:mod:`llmmarl.envs.openspiel`) alike, and a
curated game overrides the same three methods whichever library it comes from. The base class is the generic
fallback that makes *any* PettingZoo env with Discrete actions playable: a summary of the observation array and
the action ids as labels. :class:`~llmmarl.envs.openspiel.OpenSpielRenderer` is the fallback for OpenSpiel games
(OpenSpiel's own observation and action strings).

A renderer shows a seat only what its player may see: the seat's own observation (``raw``), or public state,
never another seat's hidden information.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from llmmarl.envs.pettingzoo import PettingZooTextEnv

#: The wrapper a renderer reads: ``PettingZooTextEnv`` (``env.pz`` is the PettingZoo env), or a subclass such as
#: ``OpenSpielTextEnv`` (``env.state``, ``env.game``, ``env.player(agent)``) for the renderers of that kind.
EnvT = TypeVar("EnvT", bound="PettingZooTextEnv")


class Renderer(Generic[EnvT]):
    """How one game looks as text. Subclass it for a curated game; the base class is the generic fallback.

    ``description`` is the game's rules for the system prompt. The methods get the wrapper, the seat's name and,
    for :meth:`observation`, the seat's raw PettingZoo observation (for OpenSpiel games, shimmy's; curated
    OpenSpiel renderers read ``env.state`` from the seat's player id, ``env.player(agent)``, instead).
    """

    description: str = "A multi-agent game. Choose one of the legal actions each turn."

    def observation(self, env: EnvT, agent: str, raw: Any) -> str:
        """The seat's view as text (the ``observation`` of its prompt)."""
        return "Your observation: " + _summarise(_strip_mask(raw))

    def action_label(self, env: EnvT, agent: str, action: int) -> str:
        """The label of action id ``action`` for this seat, as it appears in the legal actions and the answer."""
        return str(action)

    def vocabulary(self, env: EnvT, agent: str) -> list[str] | None:
        """Every label the seat can ever play (predictions of its moves are then scored against them), or None.

        By default: the labels of the whole action space when it has at most ``env.max_vocabulary`` actions and
        the labels are unique (ambiguous labels cannot be scored); otherwise None, and predictions stay free text.
        """
        space = env.pz.action_space(agent)
        if not isinstance(space, spaces.Discrete) or int(space.n) > env.max_vocabulary:
            return None
        start = int(space.start)
        labels = [self.action_label(env, agent, a) for a in range(start, start + int(space.n))]
        return labels if len(set(labels)) == len(labels) else None


def _strip_mask(raw: Any) -> Any:
    if isinstance(raw, dict) and "observation" in raw:
        return raw["observation"]
    return raw


def _summarise(obs: Any, max_items: int = 64) -> str:
    """A compact, faithful text form of a numeric observation (nanoGPT-style: say the shape)."""
    if isinstance(obs, dict):
        return "; ".join(f"{k}: {_summarise(v, max_items)}" for k, v in obs.items())
    arr = np.asarray(obs)
    if arr.ndim == 0:
        return str(arr.item())
    if arr.size <= max_items:
        return f"array{list(arr.shape)} = {np.array2string(arr.reshape(-1), separator=',', max_line_width=10**6)}"
    nz = np.flatnonzero(arr)
    shown = ", ".join(
        f"{tuple(int(i) for i in np.unravel_index(k, arr.shape))}={arr.flat[k]:g}" for k in nz[:max_items]
    )
    more = f" (+{len(nz) - max_items} more)" if len(nz) > max_items else ""
    return f"array{list(arr.shape)}, non-zero entries: {shown or 'none'}{more}"
