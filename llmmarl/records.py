"""Transition and episode records: what the runner writes and what trainers and tournaments read.

One JSONL line per finished game (:class:`EpisodeRecord`), written as soon as the game ends, so a run killed
halfway keeps every game it finished. :func:`summarise` turns episodes into per-agent statistics.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from llmmarl.agents.turn import Turn
from llmmarl.backends.base import ChatMessage, Generation
from llmmarl.jsonl import iter_jsonl

Outcome = Literal["win", "draw", "loss"]


class Attempt(BaseModel):
    """One generation for a turn (a re-ask makes a second)."""

    messages: list[ChatMessage]
    response: str
    prompt_ids: list[int] = Field(default_factory=list)
    completion_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    finish_reason: str = "stop"
    error: str | None = Field(None, description="Why this answer was not usable; None if it was.")
    server_error: str | None = Field(
        None,
        description="Set when the server gave no answer at all (outage, malformed response): why. Not the "
        "model's doing, so it never counts as an invalid answer.",
    )
    adapter_version: str | None = Field(None, description="Stamp of the adapter weights that answered, if stamped.")
    explore_weight: float | None = Field(
        None,
        description="Training rollouts with label-level exploration (llmmarl.train.exploration): pi / mu of this "
        "answer, the weight of its loss; None where exploration did not apply.",
    )
    explored: bool = Field(False, description="The answer is a label drawn by exploration, not the model's sample.")

    @model_serializer(mode="wrap")
    def _without_exploration(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Exploration's two fields are left out of every record it did not touch: tournament stores and
        # episode files keep the size and shape they had, and read back the same (the fields' defaults).
        data: dict[str, Any] = handler(self)
        if not self.explored and self.explore_weight is None:
            data.pop("explored", None)
            data.pop("explore_weight", None)
        return data

    @classmethod
    def of(cls, messages: list[ChatMessage], gen: Generation, error: str | None) -> Attempt:
        """The attempt that ``gen`` answered ``messages`` with: its text and every token field the two share;
        ``error`` says why the answer was not usable (None if it was)."""
        return cls(messages=messages, response=gen.text, error=error, **gen.model_dump(include=_FROM_GENERATION))


# The fields an Attempt copies from the Generation it records, under the same names.
_FROM_GENERATION = {"prompt_ids", "completion_ids", "logprobs", "finish_reason", "adapter_version"}


class TurnRecord(BaseModel):
    step: int = Field(description="Index of the environment step this action was part of.")
    seat: str = Field(description="The environment's agent name (seat) that acted.")
    player: str = Field(description="The participant (agent spec name) in that seat.")
    observation: str
    legal_actions: list[str]
    inbox: list[str] = Field(default_factory=list, description="Teammates' messages shown in this prompt.")
    attempts: list[Attempt] = Field(default_factory=list, description="LLM generations; empty for scripted agents.")
    turn: Turn | None = Field(None, description="The parsed turn, if any attempt was usable.")
    action: str = Field(description="The label actually played (in a free-text game, the move's text).")
    action_id: int = Field(description="Its action id; in a free-text game its index among the listed moves, or -1.")
    fallback: Literal["random", "forfeit"] | None = Field(
        None,
        description="Set when no attempt was usable; 'forfeit' also when a free-text game's final refusal of the move "
        "cost the seat the game.",
    )
    rejected: str | None = Field(
        None, description="Why a free-text game refused the move (its own words); the move then counts as invalid."
    )
    message: str | None = Field(None, description="The message as delivered (sanitised), if any.")
    message_to: list[str] = Field(default_factory=list)
    message_dropped: str | None = Field(
        None, description="Why the turn's message was not delivered (e.g. 'outside vocabulary'), if it was not."
    )
    prediction_hits: dict[str, bool] = Field(
        default_factory=dict, description="For each predicted agent: was the prediction right (scored when it acted)."
    )
    reward: float = Field(0.0, description="Reward this seat received from this step.")
    forecast_truth: str | None = Field(None, description="What the turn's FORECAST was checked against.")
    forecast_score: float | None = Field(
        None, description="The forecast's score in its kind (Brier, squared error, or 1/0 match); see scoring."
    )
    forecast_skill: float | None = Field(None, description="The score as skill in [0, 1], higher is better.")
    forecast_error: str | None = Field(None, description="Why the FORECAST could not be read, if it could not.")
    plan_followed: bool | None = Field(
        None, description="Whether this seat's next action was the first step of this turn's PLAN (None: not scored)."
    )
    message_followed: bool | None = Field(
        None, description="Whether this action was the one a teammate's message in the inbox named (None: none did)."
    )

    @property
    def invalid(self) -> bool:
        """The model's first answer had no legal action (whether or not a re-ask fixed it), or the game refused
        the move it played (free-text games judge moves themselves)."""
        answered = [a for a in self.attempts if a.server_error is None]
        return bool(answered) and (answered[0].error is not None or self.rejected is not None)


class EpisodeRecord(BaseModel):
    game_id: int | str
    env: str
    seed: int
    seats: dict[str, str] = Field(description="Seat -> participant name.")
    teams: dict[str, str]
    returns: dict[str, float] = Field(description="Total reward per seat: the game's payoffs.")
    outcomes: dict[str, Outcome]
    turns: list[TurnRecord]
    forfeit: str | None = Field(None, description="Seat that forfeited, if any.")
    error: str | None = Field(None, description="Set if the game broke; its returns are then not counted.")
    outage: bool = Field(
        False,
        description="The game was stopped because the server failed a decision (``error`` says how): not a "
        "result. Tournaments play it again on resume; training never uses it.",
    )


#: Points of an outcome: standings, league scores and head-to-head all count a draw as half a win.
OUTCOME_POINTS: dict[Outcome, float] = {"win": 1.0, "draw": 0.5, "loss": 0.0}


def outcomes_from_returns(returns: Mapping[str, float], teams: Mapping[str, str]) -> dict[str, Outcome]:
    """Win/draw/loss per seat: the one outcome rule of the project (records, `play`, tournaments, leagues).

    Teams are compared by their mean return (teammates normally share one payoff); a seat's outcome is its team's.
    With rivals, the best team wins, teams tied for best draw and the others lose. A fully cooperative game (one
    team, no rival) is won when the shared return is above 0 and lost otherwise: there is no draw against nobody.
    """
    if not returns:  # an unfinished or broken game has no outcome
        return {}
    by_team: dict[str, list[float]] = defaultdict(list)
    for seat, r in returns.items():
        by_team[teams[seat]].append(r)
    means = {t: sum(v) / len(v) for t, v in by_team.items()}
    if len(means) == 1:
        (only,) = means.values()
        team_outcome: dict[str, Outcome] = {t: "win" if only > 0 else "loss" for t in means}
    else:
        best = max(means.values())
        tied = sum(m == best for m in means.values()) > 1
        team_outcome = {t: ("draw" if tied else "win") if m == best else "loss" for t, m in means.items()}
    return {seat: team_outcome[teams[seat]] for seat in returns}


@dataclass
class Tally:
    """Wins, draws and losses counted one way everywhere (summaries, standings, reports)."""

    wins: int = 0
    draws: int = 0
    losses: int = 0

    def add(self, outcome: Outcome) -> None:
        if outcome == "win":
            self.wins += 1
        elif outcome == "draw":
            self.draws += 1
        else:
            self.losses += 1

    @property
    def points(self) -> float:
        return self.wins * OUTCOME_POINTS["win"] + self.draws * OUTCOME_POINTS["draw"]

    def __str__(self) -> str:
        return f"{self.wins}/{self.draws}/{self.losses}"


def read_episodes(path: str | Path, torn: list[int] | None = None) -> Iterator[EpisodeRecord]:
    """Read episodes back. A line cut short (a run killed mid-write) is skipped with a
    :class:`~llmmarl.jsonl.TornLineWarning` and its number appended to ``torn``, not fatal (see :mod:`llmmarl.jsonl`);
    a complete line that is not an episode is skipped too, and counted in a warning."""
    invalid: list[int] = []
    yield from iter_jsonl(path, EpisodeRecord.model_validate, torn, invalid)
    if invalid:
        warnings.warn(f"{path}: skipped {len(invalid)} line(s) that are not episodes: {invalid[:5]}", stacklevel=2)


class AgentSummary(BaseModel):
    player: str
    games: int = 0
    mean_return: float = 0.0
    ci95: float = Field(0.0, description="Half-width of the 95% normal confidence interval of the mean return.")
    wins: int = 0
    draws: int = 0
    losses: int = 0
    decisions: int = 0
    llm_turns: int = Field(0, description="Turns the agent played as an LLM (asked a model at least once).")
    invalid_rate: float = Field(0.0, description="Share of LLM turns whose first answer had no legal action.")
    fallback_rate: float = Field(0.0, description="Share of LLM turns played by the fallback after a re-ask.")
    prediction_accuracy: float | None = None
    predictions_scored: int = 0
    messages_sent: int = 0
    tokens_generated: int = 0
    forecast_skill: float | None = Field(None, description="Mean skill of scored forecasts (0..1, higher better).")
    forecasts_scored: int = 0
    plan_following: float | None = Field(None, description="Share of scored plans whose first step was played.")
    plans_scored: int = 0
    message_following: float | None = Field(None, description="Share of named-action messages the agent followed.")


def summarise(episodes: Iterable[EpisodeRecord]) -> list[AgentSummary]:
    """Per-participant statistics over the episodes that completed without error."""
    returns: dict[str, list[float]] = defaultdict(list)
    tallies: dict[str, Tally] = defaultdict(Tally)
    acc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    skills: dict[str, list[float]] = defaultdict(list)
    for ep in episodes:
        if ep.error:
            continue
        for seat, player in ep.seats.items():
            returns[player].append(ep.returns[seat])
            tallies[player].add(ep.outcomes[seat])
        for t in ep.turns:
            a = acc[t.player]
            a["decisions"] += 1
            if t.attempts:
                a["llm_turns"] += 1
                a["invalid"] += t.invalid
                a["fallback"] += t.fallback is not None
                a["tokens"] += sum(len(x.completion_ids) for x in t.attempts)
            a["messages"] += t.message is not None
            a["scored"] += len(t.prediction_hits)
            a["hits"] += sum(t.prediction_hits.values())
            if t.forecast_skill is not None:
                skills[t.player].append(t.forecast_skill)
            if t.plan_followed is not None:
                a["plans"] += 1
                a["plans_followed"] += t.plan_followed
            if t.message_followed is not None:
                a["named"] += 1
                a["named_followed"] += t.message_followed
    out = []
    for player, rs in returns.items():
        a = acc[player]
        n = len(rs)
        mean = sum(rs) / n
        var = sum((r - mean) ** 2 for r in rs) / (n - 1) if n > 1 else 0.0
        llm = a["llm_turns"]
        out.append(
            AgentSummary(
                player=player,
                games=n,
                mean_return=mean,
                ci95=1.96 * math.sqrt(var / n) if n > 1 else 0.0,
                wins=tallies[player].wins,
                draws=tallies[player].draws,
                losses=tallies[player].losses,
                decisions=a["decisions"],
                llm_turns=llm,
                invalid_rate=a["invalid"] / llm if llm else 0.0,
                fallback_rate=a["fallback"] / llm if llm else 0.0,
                prediction_accuracy=a["hits"] / a["scored"] if a["scored"] else None,
                predictions_scored=a["scored"],
                messages_sent=a["messages"],
                tokens_generated=a["tokens"],
                forecast_skill=sum(skills[player]) / len(skills[player]) if skills[player] else None,
                forecasts_scored=len(skills[player]),
                plan_following=a["plans_followed"] / a["plans"] if a["plans"] else None,
                plans_scored=a["plans"],
                message_following=a["named_followed"] / a["named"] if a["named"] else None,
            )
        )
    return sorted(out, key=lambda s: -s.mean_return)
