"""Game measures: what a game can say about a policy beyond the outcomes of its games.

Some games know more about a policy than its wins and losses: Kuhn poker can tell how far a policy is from its
Nash equilibrium (NashConv), because its every information state can be listed and its best responses computed.
Such a game declares its measures in its :class:`~llmmarl.envs.registry.EnvSpec` (``measures=(...)``), and the
evaluator asks for them by name (``eval_measures`` in a training config) without knowing the game.

A measure is a :class:`GameMeasure`: given a :class:`PolicyReader` it names the decisions it needs
(:class:`DecisionPoint`: an environment that stops after one seat's one decision) and turns the policy read there
(:class:`PolicyReading`) into metrics. Reading the policy is not the game's business: the reader
(:func:`llmmarl.eval.policy.policy_reader`) asks the agent through the real game path, exactly where a backend can
tell answer probabilities, by sampling answers otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class DecisionPoint:
    """One decision to read a policy at: ``make(env, **env_kwargs)``, reset, has ``seat`` to act once and then ends.

    ``key`` is the game's name for the decision (OpenSpiel's information state string, say); ``seats`` are all
    the env's seats: the reader fills the others with a placeholder that is never asked.
    """

    key: str
    env: str
    env_kwargs: Mapping[str, Any]
    seat: str
    seats: tuple[str, ...]


@dataclass
class StateReading:
    """A policy at one decision: per answer, the probability it gives each legal label (in ``labels``' order)."""

    key: str
    seat: str
    labels: list[str]
    #: Per answer: one-hot for a sampled answer, uniform for one that ended in the random fallback (its exact odds
    #: rather than its one draw), the label probabilities themselves for an exact reading.
    draws: list[list[float]] = field(default_factory=list)
    fallbacks: int = 0  # answers that ended in the random fallback
    reasks: int = 0  # answers that needed a re-ask

    def mean(self, index: int) -> float:
        """P(label ``index``) over the answers."""
        return sum(d[index] for d in self.draws) / len(self.draws)

    @property
    def probs(self) -> list[float]:
        return [self.mean(i) for i in range(len(self.labels))]

    def ci95(self, index: int) -> tuple[float, float]:
        """Wilson 95% interval of P(label ``index``) over the answers (a point when there is one answer)."""
        n, p = len(self.draws), self.mean(index)
        if n <= 1:
            return p, p
        centre = (p + _Z95**2 / (2 * n)) / (1 + _Z95**2 / n)
        half = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n)) / (1 + _Z95**2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PolicyReading:
    """An agent's policy at a game's decision points, by key."""

    agent: str
    states: dict[str, StateReading]
    exact: bool  # every decision read exactly (greedy decoding, answer probabilities, a known table)

    def table(self) -> dict[str, list[float]]:
        return {key: s.probs for key, s in self.states.items()}


class PolicyReader(Protocol):
    """Reads one agent's policy at the given decisions (the evaluator binds the agent, its backend, the seed)."""

    def __call__(self, points: Sequence[DecisionPoint]) -> PolicyReading: ...


@runtime_checkable
class GameMeasure(Protocol):
    """A measure a game declares: its ``name`` (what ``eval_measures`` lists) and how it measures a policy.

    Called with a reader and a seed (for any resampling of its own), it returns metrics by name, e.g.
    ``{"nash_conv": 0.4, "nash_conv_lo": 0.3, "nash_conv_hi": 0.5}``; the evaluator logs them under ``eval/``.
    """

    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str:
        """One line for listings: what it measures."""
        ...

    def __call__(self, read: PolicyReader, seed: int) -> dict[str, float]: ...


class UnknownMeasureError(ValueError):
    """A measure was asked of a game that does not declare it."""
