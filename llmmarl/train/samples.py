"""From one rollout to every learner's training samples: reward terms per turn, then advantages.

One :meth:`~llmmarl.runner.Runner.play` pass gives the episodes of an update. :func:`episodes_to_samples` walks
them once and gives each learner exactly its own LLM turns (in self-play, the turns of every seat), as
:class:`TurnSample` s carrying the token ids and logprobs the backend recorded; the algorithm's estimator
(:mod:`llmmarl.train.advantages`) then sets their advantages. Nothing here touches a model.

Reward of a sample (one answer of one turn), before weighting (see :class:`~llmmarl.train.settings.RewardWeights`)::

    game        the seat's episode return if the answer was usable (and, in a free-text game, the game took its
                move), else the game's forfeit reward
    format      0 if usable, else -1 + 0.5 [had an ACTION line] + 0.25 [ended by itself]
    prediction  share of the turn's predictions of others that came true (0 if none were scored)
    message     -1 if the turn delivered a message to teammates
    forecast    skill in [0, 1] of the turn's FORECAST against what happened (see llmmarl.scoring.forecast)
    plan        1 if the seat's next action was the first step of the turn's PLAN (see llmmarl.scoring.plans)
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from llmmarl.backends.base import ChatMessage
from llmmarl.records import Attempt, EpisodeRecord, TurnRecord

TERMS = ("game", "format", "prediction", "message", "forecast", "plan")
_NO_ACTION = "no ACTION line"  # prefix of the parser's error when the answer has no ACTION line at all


@dataclass
class TurnSample:
    """One LLM answer of one learner, ready for a policy-gradient step."""

    learner: str
    game_id: int
    group: int  # games of one group share seed and seating (credit: group compares them)
    seat: str
    step: int
    attempt: int  # 0 = the first answer, 1 = the re-ask's answer
    messages: list[ChatMessage]
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    usable: bool  # the parser found a legal action in it
    episode_return: float
    terms: dict[str, float]  # unweighted, one per name in TERMS
    reward: float = 0.0
    advantage: float = 0.0
    cut: bool = False  # the answer ran into max_new_tokens (its finish reason is "length")
    weight: float = 1.0  # pi / mu under label-level exploration (llmmarl.train.exploration); 1 without it
    explored: bool = False  # the answer played was drawn by exploration
    explorable: bool = False  # exploration applied to this decision (explored or not)


def format_term(attempt: Attempt) -> float:
    """0 for a usable answer; failures graded so that closer-to-format failures score higher (in [-1, -0.25])."""
    if attempt.error is None:
        return 0.0
    has_action_line = not attempt.error.startswith(_NO_ACTION)
    return -1.0 + 0.5 * has_action_line + 0.25 * (attempt.finish_reason == "stop")


def reward_terms(episode: EpisodeRecord, turn: TurnRecord, attempt: int, forfeit_reward: float) -> dict[str, float]:
    """The unweighted reward terms of answer ``attempt`` of ``turn``."""
    a = turn.attempts[attempt]
    played = a.error is None  # the answer whose action was played (the parser accepted it)
    counted = played and turn.rejected is None  # ...and, in a free-text game, the game took the move
    hits = turn.prediction_hits
    return {
        "game": episode.returns[turn.seat] if counted else forfeit_reward,
        "format": format_term(a),  # a move the game refused was still well formed for the parser
        "prediction": sum(hits.values()) / len(hits) if counted and hits else 0.0,
        "message": -1.0 if counted and turn.message is not None else 0.0,
        "forecast": (turn.forecast_skill or 0.0) if counted else 0.0,
        "plan": 1.0 if counted and turn.plan_followed else 0.0,
    }


def episodes_to_samples(
    episodes: Iterable[EpisodeRecord],
    learners: Iterable[str],
    weights: Mapping[str, float],
    forfeit_reward: float,
    group_size: int = 1,
    train_on: Literal["all_attempts", "final_attempt"] = "all_attempts",
) -> dict[str, list[TurnSample]]:
    """Every learner's samples from one rollout. Broken games (``error`` set) give none: they have no returns.

    ``group_size``: games ``g * group_size ... (g + 1) * group_size - 1`` form group ``g`` (see
    :func:`llmmarl.train.lineup.group_matches`).
    """
    out: dict[str, list[TurnSample]] = {name: [] for name in learners}
    for ep in episodes:
        if ep.error:
            continue
        for turn in ep.turns:
            if turn.player not in out or not turn.attempts:
                continue
            last = len(turn.attempts) - 1
            for i in range(last + 1) if train_on == "all_attempts" else [last]:
                a = turn.attempts[i]
                if not a.completion_ids:  # a backend that hides token ids cannot be trained on
                    continue
                terms = reward_terms(ep, turn, i, forfeit_reward)
                out[turn.player].append(
                    TurnSample(
                        learner=turn.player,
                        game_id=int(ep.game_id),  # the trainer's matches number their games 0, 1, ...
                        group=int(ep.game_id) // group_size,
                        seat=turn.seat,
                        step=turn.step,
                        attempt=i,
                        messages=a.messages,
                        prompt_ids=a.prompt_ids,
                        completion_ids=a.completion_ids,
                        logprobs=a.logprobs,
                        usable=a.error is None,
                        episode_return=ep.returns[turn.seat],
                        terms=terms,
                        reward=sum(weights[k] * v for k, v in terms.items()),
                        cut=a.finish_reason == "length",
                        weight=a.explore_weight if a.explore_weight is not None else 1.0,
                        explored=a.explored,
                        explorable=a.explore_weight is not None,
                    )
                )
    return out


_S = TypeVar("_S")


def split(items: Sequence[_S], parts: int) -> list[list[_S]]:
    """``items`` in ``parts`` contiguous chunks of near-equal size (fewer if there are fewer items, at least one)."""
    parts = max(1, min(parts, len(items)))
    bounds = [round(i * len(items) / parts) for i in range(parts + 1)]
    return [list(items[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def subsample(samples: list[_S], cap: int | None, rng: random.Random) -> list[_S]:
    """At most ``cap`` samples, drawn without replacement (after advantages, so baselines saw them all)."""
    if cap is None or len(samples) <= cap:
        return samples
    keep = sorted(rng.sample(range(len(samples)), cap))
    return [samples[i] for i in keep]
