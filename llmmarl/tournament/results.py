"""A played game as tournaments see it, and the aggregations every consumer shares.

:class:`GameResult` is the slim form of an :class:`~llmmarl.records.EpisodeRecord` that the store returns and
the schedule (Swiss standings), ratings and reports read: who sat where, the teams, the payoffs. Outcomes are
derived from payoffs by the one rule of :func:`llmmarl.records.outcomes_from_returns`, so standings, ratings,
heatmaps and ``llmmarl play`` never disagree about who won.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations

import numpy as np
from pydantic import BaseModel, Field

from llmmarl.records import OUTCOME_POINTS, Outcome, Tally, outcomes_from_returns


class GameResult(BaseModel):
    game_id: int = Field(description="Store id of the game; also the order games are rated in.")
    key: str = Field(description="The schedule's unique game key.")
    game: str = Field(description="Game label (GameSpec.key).")
    round: int = 0
    seats: dict[str, str] = Field(description="Seat -> participant name.")
    teams: dict[str, str] = Field(description="Seat -> team name (the env's teams).")
    returns: dict[str, float] = Field(description="Seat -> payoff; empty when the game broke.")
    error: str | None = None
    seed: int | None = Field(None, description="The game's seed; seat-swapped games of one pairing share it.")

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.returns)

    @property
    def cooperative(self) -> bool:
        """Every seat on one team: there is no rival, only a shared score."""
        return len(set(self.teams.values())) == 1

    def team_returns(self) -> dict[str, float]:
        """Mean payoff of each team (teammates normally share one payoff)."""
        sums: dict[str, list[float]] = {}
        for seat, r in self.returns.items():
            sums.setdefault(self.teams[seat], []).append(r)
        return {t: sum(v) / len(v) for t, v in sums.items()}

    def pairwise(self) -> list[tuple[str, str, float]]:
        """(participant a, participant b, score of a) for every pair of rival seats: 1 win, 0.5 draw, 0 loss.

        A two-player game gives one comparison; an n-team game is split into its team pairs (the usual
        reduction of a ranking to pairwise comparisons, as in Plackett-Luce's ILSR fit).
        """
        out = []
        for s, t in combinations(sorted(self.seats), 2):
            if self.teams[s] == self.teams[t] or not self.ok:
                continue
            rs, rt = self.returns[s], self.returns[t]
            out.append((self.seats[s], self.seats[t], 1.0 if rs > rt else 0.5 if rs == rt else 0.0))
        return out

    def outcomes(self) -> dict[str, Outcome]:
        """Win/draw/loss per seat by the project's one rule (:func:`llmmarl.records.outcomes_from_returns`);
        empty when the game broke."""
        return outcomes_from_returns(self.returns, self.teams) if self.ok else {}

    def points(self) -> dict[str, float]:
        """Standing points per seat: 1 a win, 0.5 a draw, 0 a loss (a cooperative game: 1 when the team scored)."""
        return {seat: OUTCOME_POINTS[o] for seat, o in self.outcomes().items()}


def tally(results: Sequence[GameResult]) -> dict[str, Tally]:
    """Wins/draws/losses of every participant over the finished games: the tally standings and reports print."""
    out: dict[str, Tally] = defaultdict(Tally)
    for r in results:
        for seat, outcome in r.outcomes().items():
            out[r.seats[seat]].add(outcome)
    return out


def duplicate_boards(results: Sequence[GameResult]) -> tuple[list[GameResult], int]:
    """Seat-swapped games dealt the same cards, merged into one result per *board*; and the games left unpaired.

    Duplicate scoring, as in duplicate bridge and poker AI evaluation: a board is every seat rotation of one
    pairing on one deal (the schedule gives them one seed), and each participant scores its payoff summed over the
    board. Luck of the deal cancels, and the size of a pot counts - in a chip game, win/loss per game does not
    see it: with seat swaps sharing deals, every player wins exactly half its games whatever its skill. A merged
    board is a :class:`GameResult` whose seats and teams are the participants themselves, so ratings and
    head-to-head tables read it unchanged. Incomplete boards (a game broke, or the tournament is still running)
    and cooperative games are left out and counted.
    """
    boards: dict[tuple[object, ...], list[GameResult]] = {}
    unpaired = 0
    for r in results:
        players = list(r.seats.values())
        if not r.ok or r.cooperative or r.seed is None or len(set(players)) != len(players):
            unpaired += 1
            continue
        if len(set(r.teams.values())) != len(r.seats):
            raise ValueError(f"duplicate scoring needs one seat per team; {r.game} has teams {r.teams}")
        boards.setdefault((r.game, r.round, r.seed, tuple(sorted(players))), []).append(r)
    merged = []
    for games in boards.values():
        orders = {tuple(g.seats.values()) for g in games}
        if len(games) != len(games[0].seats) or len(orders) != len(games):
            unpaired += len(games)
            continue
        totals = {p: 0.0 for p in games[0].seats.values()}
        for g in games:
            for seat, p in g.seats.items():
                totals[p] += g.returns[seat]
        first = min(games, key=lambda g: g.game_id)
        merged.append(
            GameResult(
                game_id=first.game_id,
                key=f"{first.key}|board",
                game=first.game,
                round=first.round,
                seats={p: p for p in totals},
                teams={p: p for p in totals},
                returns=totals,
                seed=first.seed,
            )
        )
    return sorted(merged, key=lambda b: b.game_id), unpaired


def head_to_head(results: Sequence[GameResult], participants: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Score of row vs column (wins + half the draws, over games) and the number of games; (P, P) each.

    Cells without games are NaN in the score matrix.
    """
    idx = {p: i for i, p in enumerate(participants)}
    n = len(participants)
    score, games = np.zeros((n, n)), np.zeros((n, n), dtype=int)
    for r in results:
        for a, b, s in r.pairwise():
            i, j = idx[a], idx[b]
            score[i, j] += s
            score[j, i] += 1.0 - s
            games[i, j] += 1
            games[j, i] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, score / np.maximum(games, 1), np.nan), games


def cross_play(
    results: Sequence[GameResult], participants: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, str] | None]:
    """Mean team payoff of cooperative games by who sat with whom; (P, P) means (NaN if unplayed) and counts.

    Two-seat games are seat-ordered: row = the agent in the first seat, column = the second (roles such as
    speaker/listener differ, so A-with-B is not B-with-A). Larger teams are unordered: a cell averages every
    game in which both took part, and the diagonal is pure self-play. The third value names the two seats
    when the matrix is seat-ordered.
    """
    idx = {p: i for i, p in enumerate(participants)}
    n = len(participants)
    total, games = np.zeros((n, n)), np.zeros((n, n), dtype=int)
    coop = [r for r in results if r.ok and r.cooperative]
    seats = list(coop[0].seats) if coop else []  # the env's seat order
    ordered = len(seats) == 2
    for r in coop:
        value = sum(r.returns.values()) / len(r.returns)
        names = list(r.seats.values())
        if ordered:
            cells = {(idx[names[0]], idx[names[1]])}
        elif len(set(names)) == 1:
            cells = {(idx[names[0]], idx[names[0]])}
        else:
            cells = {(idx[a], idx[b]) for a in names for b in names if a != b}
        for i, j in cells:
            total[i, j] += value
            games[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(games > 0, total / np.maximum(games, 1), np.nan)
    return mean, games, (seats[0], seats[1]) if ordered else None
