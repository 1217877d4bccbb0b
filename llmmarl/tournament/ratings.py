"""Ratings with uncertainty, on one Elo-like scale (field mean 1500, +400 = 10:1 odds).

Two estimators, because they answer different questions:

* :func:`bradley_terry` - the batch maximum-likelihood fit of the Bradley-Terry model
  P(i beats j) = 1 / (1 + exp(-(θ_i - θ_j))) (Bradley & Terry 1952, Biometrika 39:324), computed with
  ``choix.ilsr_pairwise`` (Maystre & Grossglauser 2015, "Fast and accurate inference of Plackett-Luce models",
  NeurIPS), with a small L2 ``alpha`` so that a perfect record (minimax never loses) stays finite. Draws count
  as half a win each way. 95% intervals are percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13):
  games resampled with replacement, the model refitted ``bootstrap`` times. Independent of game order.
* :func:`openskill_ratings` - the online Bayesian update of Weng & Lin 2011 ("A Bayesian approximation method
  for online ranking", JMLR 12:267), Plackett-Luce variant, via ``openskill``: teams and draws natively,
  each rating a mean μ and a standard deviation σ. Online, so it depends on game order; games are fed in
  schedule (game-id) order, which makes it reproducible.

Elo's scale (Elo 1978, "The Rating of Chessplayers"): P = 1 / (1 + 10^(-d/400)), so one natural-log odds unit
is 400 / ln 10 ≈ 173.7 points. Weng & Lin's Plackett-Luce model (their Algorithm 4) has
P(i beats j) = e^(μ_i/c) / (e^(μ_i/c) + e^(μ_j/c)) with c = √(σ_i² + σ_j² + 2β²); for settled ratings (σ → 0)
one μ unit is 1 / (√2 β) logits, about 29.5 points at openskill's default β = 25/6. (openskill's
``predict_win`` uses a probit form instead; the μ it rates with are those of the logistic likelihood.)

Cooperative games (one team) have no rival to beat: :func:`cross_play_scores` reports each participant's mean
team payoff with partners other than itself, on the game's own payoff scale, with bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import choix
import numpy as np
from openskill.models import PlackettLuce
from pydantic import BaseModel, Field

from llmmarl.tournament.results import GameResult

ELO_PER_LOGIT = 400.0 / math.log(10.0)
ELO_MEAN = 1500.0

Method = Literal["bradley_terry", "openskill", "cross_play"]


class Rating(BaseModel):
    participant: str
    method: Method
    rating: float = Field(
        description="Point estimate (Elo-like for bradley_terry/openskill; mean payoff for cross_play)."
    )
    low: float = Field(description="Lower end of the 95% interval.")
    high: float = Field(description="Upper end of the 95% interval.")
    games: int = Field(description="Rated games the participant took part in.")

    def overlaps(self, other: Rating) -> bool:
        return self.low <= other.high and other.low <= self.high


# ---- Bradley-Terry ----------------------------------------------------------------------------------------------
def _comparisons(games: Sequence[list[tuple[str, str, float]]], index: dict[str, int]) -> list[tuple[int, int]]:
    """(winner, loser) pairs for choix: a decisive game counts twice, a draw once each way (= half-wins)."""
    data: list[tuple[int, int]] = []
    for comps in games:
        for a, b, s in comps:
            i, j = index[a], index[b]
            if s == 1.0:
                data += [(i, j), (i, j)]
            elif s == 0.0:
                data += [(j, i), (j, i)]
            else:
                data += [(i, j), (j, i)]
    return data


def _fit_bt(n: int, data: list[tuple[int, int]], alpha: float) -> np.ndarray:
    if not data:
        return np.zeros(n)
    params = choix.ilsr_pairwise(n, data, alpha=alpha, max_iter=10_000, tol=1e-10)
    return params - params.mean()  # the model fixes only differences; centre the field on 0


def bradley_terry(
    results: Sequence[GameResult],
    participants: Sequence[str],
    *,
    alpha: float = 0.01,
    bootstrap: int = 200,
    seed: int = 0,
) -> list[Rating]:
    """Bradley-Terry ratings (Elo-like) with percentile-bootstrap 95% intervals, best first.

    ``alpha`` is choix's L2 regularisation (a weak prior pulling everyone toward the mean). Without bootstrap
    refits (``bootstrap=0``) the interval collapses to the point estimate.
    """
    index = {p: i for i, p in enumerate(participants)}
    games = [c for c in (r.pairwise() for r in results) if c]
    n = len(participants)
    point = _fit_bt(n, _comparisons(games, index), alpha)
    low, high = point.copy(), point.copy()
    if bootstrap and games:
        rng = np.random.default_rng(seed)
        fits = np.empty((bootstrap, n))
        for k in range(bootstrap):
            sample = [games[i] for i in rng.integers(0, len(games), len(games))]
            fits[k] = _fit_bt(n, _comparisons(sample, index), alpha)
        low, high = np.percentile(fits, [2.5, 97.5], axis=0)
    counts = _game_counts(results, participants)
    out = [
        Rating(
            participant=p,
            method="bradley_terry",
            rating=ELO_MEAN + ELO_PER_LOGIT * float(point[i]),
            low=ELO_MEAN + ELO_PER_LOGIT * float(min(low[i], point[i])),
            high=ELO_MEAN + ELO_PER_LOGIT * float(max(high[i], point[i])),
            games=counts[p],
        )
        for p, i in index.items()
    ]
    return sorted(out, key=lambda r: -r.rating)


# ---- OpenSkill --------------------------------------------------------------------------------------------------
def openskill_ratings(results: Sequence[GameResult], participants: Sequence[str]) -> list[Rating]:
    """Weng-Lin Plackett-Luce ratings after every competitive game in game-id order; μ ± 1.96σ, Elo-like."""
    model = PlackettLuce()
    ratings = {p: model.rating(name=p) for p in participants}
    for r in sorted(results, key=lambda r: r.game_id):
        if not r.ok or r.cooperative:
            continue
        teams: dict[str, list[str]] = {}
        for seat, team in r.teams.items():
            teams.setdefault(team, []).append(r.seats[seat])
        members = [p for ps in teams.values() for p in ps]
        if len(set(members)) != len(members):
            continue  # one participant on two sides (self-play) says nothing about its rating
        team_returns = r.team_returns()
        order = list(teams)
        # Rank = number of teams that did strictly better: ties share a rank, which openskill treats as a draw.
        ranks = [float(sum(team_returns[u] > team_returns[t] for u in order)) for t in order]
        rated = model.rate([[ratings[p] for p in teams[t]] for t in order], ranks=ranks)
        for t, new in zip(order, rated, strict=True):
            for p, rating in zip(teams[t], new, strict=True):
                ratings[p] = rating
    mean_mu = float(np.mean([r.mu for r in ratings.values()]))
    per_mu = ELO_PER_LOGIT / (math.sqrt(2.0) * model.beta)
    counts = _game_counts([r for r in results if not r.cooperative], participants)
    out = []
    for p, skill in ratings.items():
        centre = ELO_MEAN + per_mu * (skill.mu - mean_mu)
        out.append(
            Rating(
                participant=p,
                method="openskill",
                rating=centre,
                low=centre - 1.96 * per_mu * skill.sigma,
                high=centre + 1.96 * per_mu * skill.sigma,
                games=counts[p],
            )
        )
    return sorted(out, key=lambda r: -r.rating)


# ---- cooperative games -------------------------------------------------------------------------------------------
def cross_play_scores(
    results: Sequence[GameResult], participants: Sequence[str], *, bootstrap: int = 200, seed: int = 0
) -> list[Rating]:
    """Mean team payoff of each participant with *other* partners (self-play excluded), bootstrap 95% CI."""
    rng = np.random.default_rng(seed)
    out = []
    for p in participants:
        values = np.array(
            [
                sum(r.returns.values()) / len(r.returns)
                for r in results
                if r.ok and r.cooperative and p in r.seats.values() and set(r.seats.values()) != {p}
            ]
        )
        if not len(values):
            out.append(
                Rating(participant=p, method="cross_play", rating=math.nan, low=math.nan, high=math.nan, games=0)
            )
            continue
        mean = float(values.mean())
        low = high = mean
        if bootstrap:
            means = rng.choice(values, size=(bootstrap, len(values))).mean(axis=1)
            low, high = (float(x) for x in np.percentile(means, [2.5, 97.5]))
        out.append(Rating(participant=p, method="cross_play", rating=mean, low=low, high=high, games=len(values)))
    return sorted(out, key=lambda r: -r.rating if not math.isnan(r.rating) else math.inf)


def _game_counts(results: Sequence[GameResult], participants: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(participants, 0)
    for r in results:
        if r.ok:
            for p in set(r.seats.values()):
                counts[p] += 1
    return counts
