"""PettingZoo environments as text environments.

:class:`AECTextEnv` wraps a turn-based AEC env, :class:`ParallelTextEnv` a simultaneous-move Parallel env. Both
need Discrete action spaces. What the text looks like is a :class:`~llmmarl.envs.renderer.Renderer`'s job
(re-exported here): the generic base class makes *any* such env playable (array summary + numbered actions);
curated renderers in the game packages of ``llmmarl/envs/games/`` give the games where text matters a readable
board and named moves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Self

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

from llmmarl.envs.base import MessageRules, Observation, TextEnv
from llmmarl.envs.renderer import Renderer

__all__ = ["AECTextEnv", "ParallelTextEnv", "PettingZooTextEnv", "Renderer", "copy_in_play"]


def copy_in_play(env: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of a PettingZoo env in the middle of a game, its wrappers included, sharing nothing mutable with it.

    ``copy.deepcopy`` is not one for most PettingZoo games: their envs are gymnasium ``EzPickle`` s, which copy by
    calling the constructor again, so the copy is a fresh game that was never reset (tic-tac-toe's board comes back
    empty without an error; shimmy's OpenSpiel wrapper has no ``agents``). Here each layer of the wrapper chain
    (``wrapper.env``) is rebuilt from its attributes, deep-copied. ``memo`` is ``copy.deepcopy`` 's: objects already
    copied or to be shared (a native state cloned by its own library, an immutable native game); it is updated.
    An ``EzPickle`` held anywhere but on the chain would still be rebuilt: a game declares ``cloneable`` only where
    its tests show the copy exact.
    """
    memo = {} if memo is None else memo
    layers: list[Any] = []
    layer: Any = env
    while layer is not None:  # vars(), not getattr: a wrapper forwards unknown attributes to the env it wraps
        layers.append(layer)
        layer = vars(layer).get("env")
    twins = [object.__new__(type(x)) for x in layers]
    memo.update({id(x): twin for x, twin in zip(layers, twins, strict=True)})
    for x, twin in zip(layers, twins, strict=True):
        vars(twin).update(copy.deepcopy(vars(x), memo))
    return twins[0]


def _legal_ids(space: spaces.Space, raw: Any, info: Mapping[str, Any] | None) -> list[int]:
    if not isinstance(space, spaces.Discrete):
        raise TypeError(f"only Discrete action spaces can be played as text, got {space}")
    mask = None
    if isinstance(raw, dict) and "action_mask" in raw:
        mask = raw["action_mask"]
    elif info and "action_mask" in info:
        mask = info["action_mask"]
    if mask is None:
        return list(range(int(space.start), int(space.start) + int(space.n)))
    return [int(space.start) + int(i) for i in np.flatnonzero(np.asarray(mask))]


class PettingZooTextEnv(TextEnv):
    """Shared set-up of the two PettingZoo wrappers."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], AECEnv | ParallelEnv],
        renderer: Renderer[Any] | None = None,
        teams: Mapping[str, str] | None = None,
        message_rules: MessageRules | None = None,
    ) -> None:
        self.name = name
        self.pz = factory()
        self.renderer: Renderer[Any] = renderer or Renderer()
        self.possible_agents = list(self.pz.possible_agents)
        self.teams = dict(teams) if teams else {a: a for a in self.possible_agents}
        self.description = self.renderer.description
        self.message_rules = message_rules or MessageRules()
        self._totals: dict[str, float] = {a: 0.0 for a in self.possible_agents}

    def _observation(self, agent: str, raw: Any, info: Mapping[str, Any] | None) -> Observation:
        ids = _legal_ids(self.pz.action_space(agent), raw, info)
        return Observation(
            agent=agent,
            text=self.renderer.observation(self, agent, raw),
            legal_actions=[self.renderer.action_label(self, agent, a) for a in ids],
            action_ids=ids,
        )

    #: Action spaces up to this size are listed as a vocabulary (predictions over larger ones stay free text).
    max_vocabulary: int = 64

    def action_vocabulary(self, agent: str) -> list[str] | None:
        return self.renderer.vocabulary(self, agent)

    def _returns(self) -> dict[str, float]:
        return dict(self._totals)

    def _clone(self) -> Self:
        memo = self._clone_memo()
        copy_in_play(self.pz, memo)  # the PettingZoo env first, so that the deep copy below takes it from memo
        return copy.deepcopy(self, memo)

    def _clone_memo(self) -> dict[int, Any]:
        """Objects :meth:`clone` shares or has already copied by other means (``copy.deepcopy`` 's memo)."""
        return {}

    def close(self) -> None:
        self.pz.close()


class AECTextEnv(PettingZooTextEnv):
    """A turn-based PettingZoo AEC env as text: one pending agent at a time."""

    pz: AECEnv

    def reset(self, seed: int | None = None) -> None:
        self._reset_forfeit()
        self.pz.reset(seed=seed)
        self._totals = {a: 0.0 for a in self.possible_agents}
        self._skip_dead()

    def _skip_dead(self) -> None:
        # Terminated agents must "step" None before the next live agent is selected. Rewards are not added
        # here: the step that ended the game already paid them, and adding `rewards` again after these dead
        # steps is the classic double count.
        pz = self.pz
        while pz.agents and (pz.terminations[pz.agent_selection] or pz.truncations[pz.agent_selection]):
            pz.step(None)

    @property
    def _finished(self) -> bool:
        return not self.pz.agents

    def pending(self) -> list[str]:
        return [] if self.done else [self.pz.agent_selection]

    def observe(self, agent: str) -> Observation:
        if agent not in self.pending():
            raise ValueError(f"{agent} is not pending (pending: {self.pending()})")
        return self._observation(agent, self.pz.observe(agent), self.pz.infos.get(agent))

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        (action,) = actions.values()
        self.pz.step(int(action))
        rewards = {a: float(r) for a, r in self.pz.rewards.items()}
        for a, r in rewards.items():
            self._totals[a] += r
        self._skip_dead()
        return rewards


class ParallelTextEnv(PettingZooTextEnv):
    """A simultaneous-move PettingZoo Parallel env as text: every live agent acts each step."""

    pz: ParallelEnv

    def reset(self, seed: int | None = None) -> None:
        self._reset_forfeit()
        self._obs, self._infos = self.pz.reset(seed=seed)
        self._totals = {a: 0.0 for a in self.possible_agents}
        self._live = list(self.pz.agents)

    @property
    def _finished(self) -> bool:
        return not self._live

    def pending(self) -> list[str]:
        return [] if self.done else list(self._live)

    def observe(self, agent: str) -> Observation:
        if agent not in self.pending():
            raise ValueError(f"{agent} is not pending (pending: {self.pending()})")
        return self._observation(agent, self._obs[agent], self._infos.get(agent))

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        self._obs, rewards, terms, truncs, self._infos = self.pz.step({a: int(x) for a, x in actions.items()})
        for a, r in rewards.items():
            self._totals[a] += float(r)
        self._live = [a for a in self.pz.agents if not (terms.get(a) or truncs.get(a))]
        return {a: float(r) for a, r in rewards.items()}
