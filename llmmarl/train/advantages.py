"""Advantage estimators, registered by name: every algorithm's credit assignment lives here, and nowhere else.

==================  ===============================================================  ======================
name                advantage of an answer                                           used by
==================  ===============================================================  ======================
``group_relative``  reward minus its baseline set's mean, over its std (GRPO)         ``algorithm: grpo``
``leave_one_out``   reward minus the mean of the *other* answers of its set (RLOO)    ``algorithm: rloo``
``gae``             GAE over each seat's own answers in a game, from critic values    ``algorithm: ppo``
``all_action``      ``Q(s, a) - sum_b pi(b|s) Q(s, b)`` for every legal label         ``algorithm: all_action``
==================  ===============================================================  ======================

Estimators work on a learner's :class:`~llmmarl.train.samples.TurnSample` s of one update and set their
``advantage`` in place (``gae`` also returns the critic's targets; ``all_action`` works on label tables, not
answers). :func:`register_estimator` adds one under a name, as verl registers its estimators; :func:`estimator`
finds one by name. Nothing here touches a model.

Rewards of GAE's steps (the weighted terms of :func:`llmmarl.train.samples.reward_terms`)::

    every answer        format + prediction + message terms (they belong to that answer)
    the last answer     + the game term: the seat's episode return (the game pays at the end)
    an unusable answer  + the game term: the game's forfeit reward, and its credit ends there

An unusable answer is played by a fallback (a random legal move) or re-asked; what happens after it is not its
doing, so - as in GRPO's rewards - it earns the forfeit reward and does not bootstrap from later turns. The turns
before it still bootstrap from its state's value.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import torch

from llmmarl.train.samples import TurnSample

__all__ = [
    "all_action_advantages",
    "estimator",
    "estimators",
    "gae",
    "group_relative",
    "imitation_weights",
    "leave_one_out",
    "natural_advantages",
    "register_estimator",
    "trajectory_gae",
    "turn_rewards",
]

_ESTIMATORS: dict[str, Callable[..., Any]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def register_estimator(name: str) -> Callable[[F], F]:
    """Decorator: make ``fn`` the estimator named ``name`` (replaces a same name)."""

    def add(fn: F) -> F:
        _ESTIMATORS[name] = fn
        return fn

    return add


def estimators() -> list[str]:
    """The registered estimator names."""
    return sorted(_ESTIMATORS)


def estimator(name: str) -> Callable[..., Any]:
    """The estimator registered as ``name``; a clear error for an unknown one."""
    if name not in _ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {', '.join(estimators())}")
    return _ESTIMATORS[name]


# ---- group-relative (GRPO) -------------------------------------------------------------------------------------
def _key(s: TurnSample, credit: str) -> tuple[object, ...]:
    if credit == "group":
        return (s.learner, s.group, s.seat)
    if credit == "role":
        return (s.learner, s.seat)
    return (s.learner,)


def _std(xs: Sequence[float], mean: float) -> float:
    """Sample standard deviation (n - 1), as GRPO and TRL use; 0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


@register_estimator("group_relative")
def group_relative(
    samples: Sequence[TurnSample],
    credit: Literal["group", "role", "agent"],
    normalize: bool = True,
    role_baselines: dict[str, float] | None = None,
    ema: float = 0.0,
    eps: float = 1e-4,
) -> None:
    """Set ``advantage = (reward - baseline) / (std + eps)`` on every sample, in place.

    The baseline set of a sample is its learner's samples with the same seat and group (``group``), the same
    seat (``role``) or all of them (``agent``); the baseline is that set's mean reward, and ``std`` its sample
    standard deviation (only when ``normalize``; a set with no spread is not divided). With ``credit: role`` and
    ``ema > 0`` the baseline is smoothed across calls in ``role_baselines`` (SPIRAL's role-conditioned
    advantage estimation): ``b <- ema * b + (1 - ema) * mean``.
    """
    sets: dict[tuple[object, ...], list[TurnSample]] = defaultdict(list)
    for s in samples:
        sets[_key(s, credit)].append(s)
    for key, members in sets.items():
        rewards = [s.reward for s in members]
        mean = sum(rewards) / len(rewards)
        baseline = mean
        if credit == "role" and ema > 0 and role_baselines is not None:
            name = "/".join(str(k) for k in key)
            if name in role_baselines:
                baseline = ema * role_baselines[name] + (1.0 - ema) * mean
            role_baselines[name] = baseline
        std = _std(rewards, mean)
        scale = std + eps if normalize and std > 0 else 1.0
        for s in members:
            s.advantage = (s.reward - baseline) / scale


def imitation_weights(samples: Sequence[TurnSample], scale: float = 0.5) -> None:
    """Turn advantages into reward-weighted imitation weights, ``max(0, 1 + scale * advantage)``, in place.

    With TRL's on-policy loss (ratio 1 at the step) a positive weight on a sample is a weighted log-likelihood
    step on its tokens. Advantages centred on zero push as many answers down as up, so a format shared by every
    answer is never learned from them; these weights are positive for all but the clearly worse answers, so the
    format is imitated while better outcomes still count more (advantage-weighted regression in spirit).
    """
    for s in samples:
        s.advantage = max(0.0, 1.0 + scale * s.advantage)


# ---- leave-one-out (RLOO) --------------------------------------------------------------------------------------
@register_estimator("leave_one_out")
def leave_one_out(samples: Sequence[TurnSample]) -> None:
    """Set every sample's ``advantage`` to its reward minus the mean of the others in its (learner, group, seat)
    set, in place; 0 for a sample alone in its set."""
    sets: dict[tuple[str, int, str], list[TurnSample]] = defaultdict(list)
    for s in samples:
        sets[(s.learner, s.group, s.seat)].append(s)
    for members in sets.values():
        k, total = len(members), sum(s.reward for s in members)
        for s in members:
            s.advantage = s.reward - (total - s.reward) / (k - 1) if k > 1 else 0.0


# ---- GAE (PPO) -------------------------------------------------------------------------------------------------
def turn_rewards(trajectory: Sequence[TurnSample], weights: Mapping[str, float]) -> tuple[list[float], list[bool]]:
    """Per-sample rewards and terminal flags of one seat's samples of one game, in the order they were played."""
    rewards, dones = [], []
    for i, s in enumerate(trajectory):
        terminal = not s.usable or i == len(trajectory) - 1
        r = sum(w * s.terms[k] for k, w in weights.items() if k != "game")
        if terminal:
            # terms["game"] is the episode return for a usable answer and the forfeit reward otherwise.
            r += weights["game"] * s.terms["game"]
        rewards.append(r)
        dones.append(terminal)
    return rewards, dones


def gae(
    rewards: Sequence[float], values: Sequence[float], dones: Sequence[bool], gamma: float, lam: float
) -> tuple[list[float], list[float]]:
    """Advantages and returns (advantage + value) of one trajectory.

    ``dones[i]``: no bootstrapping from step ``i + 1``; the last step never bootstraps (the game is over)::

        delta_i = r_i + gamma * V_{i+1} * (1 - done_i) - V_i
        A_i     = delta_i + gamma * lam * (1 - done_i) * A_{i+1}
    """
    n = len(rewards)
    if not len(values) == len(dones) == n:
        raise ValueError(f"{n} rewards, {len(values)} values, {len(dones)} dones: one each per step")
    advantages = [0.0] * n
    running = 0.0
    for i in reversed(range(n)):
        cont = 0.0 if dones[i] or i == n - 1 else 1.0
        next_value = values[i + 1] if cont else 0.0
        delta = rewards[i] + gamma * next_value - values[i]
        running = delta + gamma * lam * cont * running
        advantages[i] = running
    return advantages, [a + v for a, v in zip(advantages, values, strict=True)]


@register_estimator("gae")
def trajectory_gae(
    samples: Sequence[TurnSample],
    values: Sequence[float],
    weights: Mapping[str, float],
    gamma: float,
    lam: float,
    normalize: bool = True,
) -> tuple[list[float], list[float]]:
    """GAE per trajectory (a seat's answers in one game, in play order, as the samples come), then - with
    ``normalize`` - standardised over all ``samples`` (eps 1e-8, as in CleanRL's PPO; not GRPO's per-group eps).

    Sets each sample's ``advantage`` to its raw GAE advantage; returns the advantages the loss uses and the
    returns (the critic's targets), aligned with ``samples``.
    """
    trajectories: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        trajectories[(s.game_id, s.seat)].append(i)
    advantages, returns = [0.0] * len(samples), [0.0] * len(samples)
    for members in trajectories.values():
        rewards, dones = turn_rewards([samples[i] for i in members], weights)
        adv, ret = gae(rewards, [values[i] for i in members], dones, gamma, lam)
        for i, a, r in zip(members, adv, ret, strict=True):
            advantages[i], returns[i] = a, r
            samples[i].advantage = a
    if normalize and len(samples) > 1:
        mean = sum(advantages) / len(samples)
        std = math.sqrt(sum((a - mean) ** 2 for a in advantages) / (len(samples) - 1))
        advantages = [(a - mean) / (std + 1e-8) for a in advantages]
    return advantages, returns


# ---- all-action (one decision's labels) ------------------------------------------------------------------------
def label_mask(logprobs: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The legal labels of (decisions, labels) tables as a bool mask; a clear error for tables that do not fit."""
    if logprobs.shape != q.shape or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs and q must both be (decisions, labels), got {tuple(logprobs.shape)} and {tuple(q.shape)}"
        )
    if mask is None:
        return torch.ones_like(q, dtype=torch.bool)
    if mask.shape != q.shape:
        raise ValueError(f"mask must be shaped as q {tuple(q.shape)}, got {tuple(mask.shape)}")
    if not bool(mask.bool().any(dim=1).all()):
        raise ValueError("every decision needs at least one legal label in mask")
    return mask.bool()


@register_estimator("all_action")
def all_action_advantages(
    logprobs: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A(s, a) = Q(s, a) - sum_b pi(b|s) Q(s, b)`` and V(s), with no gradient.

    ``logprobs``, ``q``: (decisions, labels); ``mask``: (decisions, labels), True where the label is legal (a
    decision with fewer labels pads its row). Returns A (0 on padding) and V, shaped (decisions, labels) and
    (decisions,).
    """
    legal = label_mask(logprobs, q, mask)
    with torch.no_grad():
        pi = torch.where(legal, logprobs.exp(), torch.zeros_like(logprobs))
        qs = torch.where(legal, q, torch.zeros_like(q))
        v = (pi * qs).sum(dim=1)
        a = torch.where(legal, qs - v[:, None], torch.zeros_like(qs))
    return a, v


def natural_advantages(q: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``Q(s, a) - mean_b Q(s, b)`` over each decision's legal labels (0 on padding), with no gradient."""
    legal = label_mask(q, q, mask)  # q's own shape: the estimator reads no policy
    with torch.no_grad():
        qs = torch.where(legal, q, torch.zeros_like(q))
        mean = qs.sum(dim=1) / legal.sum(dim=1)
        return torch.where(legal, qs - mean[:, None], torch.zeros_like(qs))
