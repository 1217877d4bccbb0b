"""The numbers of a tournament report, computed once from the store into a :class:`TournamentReport`.

:func:`build_report` rates each game's participants (Bradley-Terry and OpenSkill, or cross-play for cooperative
games), fills the head-to-head and cross-play matrices and the invalid-action rates. The report is pydantic, so it
also dumps to JSON; :mod:`llmmarl.tournament.report_html`, :mod:`~llmmarl.tournament.report_text` and
:mod:`~llmmarl.tournament.report_plots` only lay it out.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from llmmarl.tournament.ratings import Rating, bradley_terry, cross_play_scores, openskill_ratings
from llmmarl.tournament.results import GameResult, cross_play, duplicate_boards, head_to_head, tally
from llmmarl.tournament.store import SeatStats, TournamentStore


class ParticipantRow(BaseModel):
    participant: str
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    mean_payoff: float | None = None
    bradley_terry: Rating | None = None
    openskill: Rating | None = None
    cross_play: Rating | None = None
    llm_turns: int = 0
    invalid_rate: float | None = Field(None, description="Share of LLM turns whose first answer was not legal.")
    fallback_rate: float | None = Field(None, description="Share of LLM turns played by the fallback.")


class GameSection(BaseModel):
    game: str
    env: str
    cooperative: bool
    games: int = Field(description="Finished games without errors (the rated ones).")
    errors: int
    participants: list[str]
    rows: list[ParticipantRow] = Field(description="Best first.")
    h2h: list[list[float | None]] = Field(description="Row's score vs column (wins + draws/2), None if unplayed.")
    h2h_games: list[list[int]]
    cross_play: list[list[float | None]] = Field(description="Mean team payoff, row with column (cooperative).")
    cross_play_games: list[list[int]]
    cross_play_seats: tuple[str, str] | None = Field(None, description="Seats of rows and columns, if seat-ordered.")
    scoring: str = Field("outcome", description="outcome (per game) or duplicate (per board; see GameSpec.scoring).")
    boards: int = Field(0, description="Duplicate scoring: boards rated (seat-swapped games sharing a deal).")
    unpaired: int = Field(0, description="Duplicate scoring: rated games left out because their board is incomplete.")


class TournamentReport(BaseModel):
    name: str
    generated: str
    schedule: str
    participants: dict[str, str] = Field(default_factory=dict, description="Name -> what it is, in one line.")
    scheduled: int
    finished: int
    errors: int
    sections: list[GameSection]


# ---- building ----------------------------------------------------------------------------------------------------
def build_report(
    store: TournamentStore,
    tournament: str | None = None,
    *,
    bootstrap: int | None = None,
    scoring: str | None = None,
) -> TournamentReport:
    """Compute ratings, matrices and rates for each game of a stored tournament (default: the latest one).

    ``scoring`` overrides every competitive game's ``scoring`` setting (outcome or duplicate).
    """
    names = store.tournaments()
    if not names:
        raise ValueError(f"{store.path} holds no tournament yet")
    tournament = tournament or names[-1]
    config = store.config(tournament)
    participants = [p["name"] for p in config["participants"]]
    bootstrap = config.get("bootstrap", 200) if bootstrap is None else bootstrap
    seed = int(config.get("seed", 0))
    scheduled, finished, errors = store.counts(tournament)
    stats = {(s.game, s.participant): s for s in store.seat_stats(tournament)}
    envs = {g.game: g.env for g in store.games(tournament)}
    scorings = {g.get("label") or g["env"]: g.get("scoring", "outcome") for g in config.get("games", [])}
    sections = []
    for game, env in envs.items():
        results = store.results(tournament, game=game, include_errors=True)
        how = scoring or scorings.get(game, "outcome")
        sections.append(_section(game, env, results, participants, stats, bootstrap, seed, how))
    return TournamentReport(
        name=tournament,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        schedule=_describe_schedule(config.get("schedule", {})),
        participants={p["name"]: _describe_participant(p, config) for p in config["participants"]},
        scheduled=scheduled,
        finished=finished,
        errors=errors,
        sections=sections,
    )


def _section(
    game: str,
    env: str,
    all_results: Sequence[GameResult],
    participants: list[str],
    stats: dict[tuple[str, str], SeatStats],
    bootstrap: int,
    seed: int,
    scoring: str = "outcome",
) -> GameSection:
    results = [r for r in all_results if r.ok]
    cooperative = bool(results) and all(r.cooperative for r in results)
    rows = {p: ParticipantRow(participant=p) for p in participants}
    payoffs: dict[str, list[float]] = {p: [] for p in participants}
    for r in results:
        for seat, p in r.seats.items():
            payoffs[p].append(r.returns[seat])
    tallies = tally(results)
    for p, row in rows.items():
        row.wins, row.draws, row.losses = tallies[p].wins, tallies[p].draws, tallies[p].losses
        row.games = len(payoffs[p])
        row.mean_payoff = float(np.mean(payoffs[p])) if payoffs[p] else None
        if (s := stats.get((game, p))) is not None:
            row.llm_turns, row.invalid_rate, row.fallback_rate = s.llm_turns, s.invalid_rate, s.fallback_rate
    if cooperative:
        for rating in cross_play_scores(results, participants, bootstrap=bootstrap, seed=seed):
            rows[rating.participant].cross_play = rating
        order = sorted(participants, key=lambda p: _sort_key(rows[p].cross_play))
    rated, boards, unpaired = results, 0, 0
    if scoring == "duplicate" and not cooperative:
        rated, unpaired = duplicate_boards(results)
        boards = len(rated)
    if not cooperative:
        for rating in bradley_terry(rated, participants, bootstrap=bootstrap, seed=seed):
            rows[rating.participant].bradley_terry = rating
        for rating in openskill_ratings(rated, participants):
            rows[rating.participant].openskill = rating
        order = sorted(participants, key=lambda p: _sort_key(rows[p].bradley_terry))
    h2h, h2h_games = head_to_head(rated, participants)
    xp, xp_games, xp_seats = cross_play(results, participants)
    return GameSection(
        game=game,
        env=env,
        cooperative=cooperative,
        games=len(results),
        errors=len(all_results) - len(results),
        participants=participants,
        rows=[rows[p] for p in order],
        h2h=_nan_to_none(h2h),
        h2h_games=h2h_games.tolist(),
        cross_play=_nan_to_none(xp),
        cross_play_games=xp_games.tolist(),
        cross_play_seats=xp_seats,
        scoring="outcome" if cooperative else scoring,
        boards=boards,
        unpaired=unpaired,
    )


def _sort_key(rating: Rating | None) -> float:
    return -rating.rating if rating is not None and not math.isnan(rating.rating) else math.inf


def _nan_to_none(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(x) else float(x) for x in row] for row in matrix]


def _describe_schedule(schedule: dict[str, object]) -> str:
    if schedule.get("format") == "swiss":
        return f"Swiss, {schedule.get('rounds')} rounds, {schedule.get('games_per_pairing')} games per pairing"
    swap = "in every seat order" if schedule.get("swap_seats", True) else "in listed seat order only"
    return f"round robin, {schedule.get('games_per_pairing')} games per pairing {swap}"


def _describe_participant(p: dict[str, object], config: dict[str, object]) -> str:
    # Endpoint URLs are left out on purpose: the report carries no links.
    if p.get("kind") == "scripted":
        return f"scripted policy {p.get('policy')}"
    if p.get("kind") == "openai":
        what = f"served model {p.get('model')} (OpenAI-compatible endpoint)"
    else:
        what = f"{p.get('base_model') or config.get('base_model')}" + (
            f" + adapter {p['adapter']}" if p.get("adapter") else ""
        )
    extras = [f"template {p['template']}"] if p.get("template") else []
    extras += [f"temperature {p.get('temperature')}", f"max {p.get('max_new_tokens')} tokens"]
    extras += ["constrained"] if p.get("constrained") else []
    return f"LLM {what}; " + ", ".join(extras)
