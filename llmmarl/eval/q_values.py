"""Monte-Carlo action values of one decision, by branching a cloned game on every legal label.

From a game in play where ``seat`` must act, :func:`q_values` clones the game once per rollout, plays one label in
the clone, lets the given policies play the rest of the game, and averages what ``seat`` earned from there on::

    Q(s, a) ~= mean over m rollouts of [ R_seat(end) - R_seat(s) ]     after playing a at s

Each label's estimate comes with its standard error (sample standard deviation / sqrt(m)), so the per-label
estimates can be compared and the all-action advantage A(s, a) = Q(s, a) - sum_b pi(b|s) Q(s, b) formed with an
error bar. Rollout ``i`` of every label uses the same policy random stream (common random numbers), so differences
between labels carry less noise than the labels' own estimates.

What a clone keeps matters (see :meth:`~llmmarl.envs.base.TextEnv.clone`): the state is the game's true state, so
hidden information dealt before ``s`` (Kuhn poker's cards) is fixed, and chance after ``s`` follows the clone's
copied random state, which is the same in every rollout. The estimate is then Q given that state and those future
draws; for games whose chance all happens before ``s`` (Kuhn poker, the probes) that is the game's Q(s, a).
Messages are not delivered in rollouts (the runner, not the game, carries them): the policies act on observations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmmarl.envs.base import TextEnv
from llmmarl.envs.bots import ScriptedPolicy

__all__ = ["QEstimate", "q_values"]

_MAX_STEPS = 10_000  # a rollout longer than this is a game that does not end under these policies


@dataclass(frozen=True)
class QEstimate:
    """One label's Monte-Carlo action value."""

    mean: float
    stderr: float  # sample standard deviation / sqrt(n); NaN for a single rollout
    n: int


def _policy_for(policy: ScriptedPolicy | Mapping[str, ScriptedPolicy], seat: str) -> ScriptedPolicy:
    if isinstance(policy, Mapping):
        if seat not in policy:
            raise ValueError(f"no policy for seat {seat!r}; given for {sorted(policy)}")
        return policy[seat]
    return policy


def _rollout(
    game: TextEnv,
    seat: str,
    action: int,
    policy: ScriptedPolicy | Mapping[str, ScriptedPolicy],
    rng: random.Random,
) -> float:
    """Play ``action`` for ``seat`` in ``game`` (a clone), then the policies to the end; ``seat``'s return from
    here on."""
    start = game.returns()[seat]
    others = {a: _policy_for(policy, a)(game, game.observe(a), rng) for a in game.pending() if a != seat}
    game.step({seat: action, **others})  # simultaneous seats move with it, as their policies choose
    steps = 1
    while not game.done:
        game.step({a: _policy_for(policy, a)(game, game.observe(a), rng) for a in game.pending()})
        steps += 1
        if steps > _MAX_STEPS:
            raise RuntimeError(f"{game.name}: a rollout did not end within {_MAX_STEPS} steps")
    return game.returns()[seat] - start


def q_values(
    game: TextEnv,
    seat: str,
    labels: Sequence[str] | None,
    policy: ScriptedPolicy | Mapping[str, ScriptedPolicy],
    m: int,
    seed: int = 0,
) -> dict[str, QEstimate]:
    """Q(s, a) of ``seat`` for each of ``labels`` (None: every legal label) at the game's current state, from ``m``
    rollouts per label. ``game`` must declare :attr:`~llmmarl.envs.base.TextEnv.cloneable`; it is never stepped.

    ``policy`` plays every decision after the branched one (``seat``'s later turns included), and the other seats
    that move at the same time in a simultaneous game: one scripted policy for all seats, or one per seat.
    """
    if m < 1:
        raise ValueError(f"m is the number of rollouts per label: at least 1, got {m}")
    if game.done:
        raise ValueError(f"{game.name}: the game is over, there is no decision to branch")
    if seat not in game.pending():
        raise ValueError(f"{game.name}: {seat!r} is not to act (pending: {game.pending()})")
    obs = game.observe(seat)
    if obs.free_text is not None:
        raise ValueError(f"{game.name}: {seat} plays free text; Q values are per label of a labelled move")
    chosen = list(obs.legal_actions) if labels is None else list(labels)
    if not chosen:
        raise ValueError("no labels to branch on")
    illegal = [x for x in chosen if x not in obs.legal_actions]
    if illegal:
        raise ValueError(f"{game.name}: {illegal} not legal for {seat}; legal: {obs.legal_actions}")
    if not game.cloneable:
        game.clone()  # raises NotCloneableError, naming the game
    out: dict[str, QEstimate] = {}
    for label in chosen:
        action = obs.action_id(label)
        values = [_rollout(game.clone(), seat, action, policy, random.Random(f"{seed}/{i}")) for i in range(m)]
        mean = sum(values) / m
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (m - 1)) if m > 1 else math.nan
        out[label] = QEstimate(mean=mean, stderr=std / math.sqrt(m), n=m)
    return out
