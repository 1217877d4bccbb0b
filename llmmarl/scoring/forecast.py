"""Scoring FORECAST lines against what then happened in the game.

A game declares what may be forecast with a :class:`~llmmarl.envs.base.ForecastSpec`. Each kind has its own
score, lower or higher as its literature has it:

=================  ==========================================  ==============================================
target              answer                                      score (``TurnRecord.forecast_score``)
=================  ==========================================  ==============================================
``outcome``         ``win=0.6; draw=0.3; loss=0.1``             Brier score: sum over labels of (p - [label
                                                                happened])^2, 0 (perfect) to 2; lower is better
``payoff``          ``+1.5``                                    squared error against the final return; lower
``ends_within``     ``continues`` / ``win`` / ...               1 if exactly right, else 0
``opponent_card``   ``K``                                       1 if exactly right, else 0
=================  ==========================================  ==============================================

:func:`forecast_skill` maps every score to [0, 1], higher is better (1 - Brier/2; 1 - squared error / (2 *
scale)^2, floored at 0; the match itself): the reward term and the cross-game summary use it. A forecast that
cannot be read in its kind's shape scores as the worst answer (skill 0) and is counted (``forecast_error``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, Field

from llmmarl.agents.turn import match_action, normalise_label
from llmmarl.envs.base import ForecastSpec
from llmmarl.records import EpisodeRecord, TurnRecord

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


class ForecastError(ValueError):
    """A forecast that cannot be read in its kind's shape; the message says why."""


def read_probabilities(text: str, labels: Sequence[str]) -> dict[str, float]:
    """``"win=0.6; draw=0.3; loss=0.1"`` (``:`` or ``=``, ``;`` or ``,``; percentages allowed) -> a distribution.

    Every label must be given once; the values must be in [0, 1] and sum to 1 within 0.02, then are renormalised.
    """
    out: dict[str, float] = {}
    for part in re.split(r"[;,]", text):
        name, sep, value = part.partition("=")
        if not sep:
            name, sep, value = part.partition(":")
        if not sep:
            continue
        label = match_action(name, labels)
        number = _NUMBER.search(value)
        if label is None or number is None:
            raise ForecastError(f"cannot read {part.strip()!r} as <one of {', '.join(labels)}>=<probability>")
        p = float(number.group()) / (100.0 if "%" in value else 1.0)
        if label in out:
            raise ForecastError(f"{label} given twice")
        if not 0.0 <= p <= 1.0:
            raise ForecastError(f"{label}={p} is not a probability")
        out[label] = p
    missing = [label for label in labels if label not in out]
    if missing:
        raise ForecastError(f"no probability for {', '.join(missing)}")
    total = sum(out.values())
    if abs(total - 1.0) > 0.02:
        raise ForecastError(f"the probabilities sum to {total:g}, not 1")
    return {label: out[label] / total for label in labels}


def read_number(text: str) -> float:
    number = _NUMBER.search(text)
    if number is None:
        raise ForecastError(f"no number in {text!r}")
    return float(number.group())


def read_label(text: str, labels: Sequence[str]) -> str:
    label = match_action(text, labels)
    if label is None:
        raise ForecastError(f"{normalise_label(text)!r} is not one of {', '.join(labels)}")
    return label


def brier(probabilities: Mapping[str, float], happened: str) -> float:
    """Multi-class Brier score (Brier 1950): sum over labels of (p - 1[label happened])^2, in [0, 2]."""
    return sum((p - (label == happened)) ** 2 for label, p in probabilities.items())


def score_forecast(text: str, spec: ForecastSpec, truth: str | float) -> float:
    """The score of one forecast (see the module table). Raises :class:`ForecastError` if it cannot be read."""
    if spec.target == "outcome":
        return brier(read_probabilities(text, spec.labels), str(truth))
    if spec.target == "payoff":
        return (read_number(text) - float(truth)) ** 2
    return float(read_label(text, spec.labels) == truth)


def forecast_skill(score: float | None, spec: ForecastSpec) -> float:
    """A score as skill in [0, 1], higher is better; an unreadable forecast (``None``) has skill 0."""
    if score is None:
        return 0.0
    if spec.target == "outcome":
        return 1.0 - score / 2.0
    if spec.target == "payoff":
        return max(0.0, 1.0 - score / (2.0 * spec.scale) ** 2)
    return score


def truth_at_end(turn: TurnRecord, episode: EpisodeRecord, spec: ForecastSpec) -> str | float | None:
    """What a forecast made at ``turn`` is checked against, once the episode is over (None: nothing to check)."""
    if episode.error or turn.seat not in episode.returns:
        return None
    if spec.target == "opponent_card":
        return turn.forecast_truth  # read from the simulator when the forecast was made
    if spec.target == "payoff":
        return episode.returns[turn.seat]
    outcome = episode.outcomes[turn.seat]
    if spec.target == "outcome":
        return outcome
    last_step = max(t.step for t in episode.turns)
    ended = last_step - turn.step < spec.horizon and episode.forfeit is None
    return outcome if ended else "continues"


def score_episode(episode: EpisodeRecord, specs: Mapping[str, ForecastSpec]) -> None:
    """Score every forecast of a finished episode in place (``forecast_score``, ``forecast_error``, truth).

    ``specs``: each seat's :class:`ForecastSpec` (``env.forecast_spec(seat)``). A game cut short by a forfeit
    still scores outcome and payoff forecasts (the forfeit is what happened) but not ``ends_within``.
    """
    for turn in episode.turns:
        if turn.turn is None or turn.turn.forecast is None or turn.seat not in specs:
            continue
        spec = specs[turn.seat]
        truth = truth_at_end(turn, episode, spec)
        if truth is None:
            continue
        turn.forecast_truth = str(truth)
        try:
            turn.forecast_score = score_forecast(turn.turn.forecast, spec, truth)
            turn.forecast_error = None
        except ForecastError as e:
            turn.forecast_score, turn.forecast_error = None, str(e)
        turn.forecast_skill = forecast_skill(turn.forecast_score, spec)


class CalibrationBin(BaseModel):
    lo: float
    hi: float
    count: int = 0
    mean_forecast: float = Field(0.0, description="Mean forecast probability of the forecasts in this bin.")
    frequency: float = Field(0.0, description="How often the forecast event happened among them.")


def calibration(pairs: Iterable[tuple[float, bool]], bins: int = 10) -> list[CalibrationBin]:
    """Reliability-diagram data: (forecast probability, did it happen) pairs grouped in ``bins`` equal bins."""
    out = [CalibrationBin(lo=i / bins, hi=(i + 1) / bins) for i in range(bins)]
    sums = [[0.0, 0.0] for _ in range(bins)]
    for p, happened in pairs:
        i = min(int(p * bins), bins - 1)
        out[i].count += 1
        sums[i][0] += p
        sums[i][1] += happened
    for b, (ps, hits) in zip(out, sums, strict=True):
        if b.count:
            b.mean_forecast, b.frequency = ps / b.count, hits / b.count
    return out
