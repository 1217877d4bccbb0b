"""One outcome rule and one tally: `play`'s records, tournament standings and reports agree on who won."""

from __future__ import annotations

import pytest
from rich.console import Console

from llmmarl.records import OUTCOME_POINTS, Tally, outcomes_from_returns
from llmmarl.tournament.results import GameResult, tally
from llmmarl.tournament.run import standings_table

TWO = {"p1": "p1", "p2": "p2"}
TEAMS = {"a1": "red", "a2": "red", "b1": "blue", "b2": "blue"}
THREE = {"x": "x", "y": "y", "z": "z"}
COOP = {"speaker": "team", "listener": "team"}


@pytest.mark.parametrize(
    ("returns", "teams", "expected"),
    [
        ({"p1": 1.0, "p2": -1.0}, TWO, {"p1": "win", "p2": "loss"}),
        ({"p1": 0.0, "p2": 0.0}, TWO, {"p1": "draw", "p2": "draw"}),
        ({"a1": 2.0, "a2": 2.0, "b1": -2.0, "b2": -2.0}, TEAMS, {"a1": "win", "a2": "win", "b1": "loss", "b2": "loss"}),
        # a team is judged by its mean: teammates share the team's outcome
        ({"a1": 3.0, "a2": -1.0, "b1": 0.5, "b2": 0.5}, TEAMS, {"a1": "win", "a2": "win", "b1": "loss", "b2": "loss"}),
        ({"x": 1.0, "y": 1.0, "z": -2.0}, THREE, {"x": "draw", "y": "draw", "z": "loss"}),
        ({"speaker": 1.0, "listener": 1.0}, COOP, {"speaker": "win", "listener": "win"}),
        ({"speaker": 0.0, "listener": 0.0}, COOP, {"speaker": "loss", "listener": "loss"}),
        ({"speaker": -1.0, "listener": -1.0}, COOP, {"speaker": "loss", "listener": "loss"}),
    ],
)
def test_one_rule_for_records_and_tournaments(returns, teams, expected):
    assert outcomes_from_returns(returns, teams) == expected
    seats = {seat: f"agent-{seat}" for seat in returns}
    result = GameResult(game_id=1, key="k", game="g", seats=seats, teams=teams, returns=returns)
    assert result.outcomes() == expected
    assert result.points() == {seat: OUTCOME_POINTS[o] for seat, o in expected.items()}


def test_a_failed_cooperative_game_scores_no_point():
    """The rule the two modules used to disagree on: a shared score of 0 is not a win for anyone."""
    failed = GameResult(game_id=1, key="k", game="sig", seats={"speaker": "a", "listener": "b"}, teams=COOP,
                        returns={"speaker": 0.0, "listener": 0.0})  # fmt: skip
    assert failed.points() == {"speaker": 0.0, "listener": 0.0}


def test_broken_games_have_no_outcome_and_are_not_tallied():
    broken = GameResult(game_id=1, key="k", game="g", seats={"p1": "a", "p2": "b"}, teams=TWO, returns={}, error="x")
    assert broken.outcomes() == {} and broken.points() == {}
    assert tally([broken]) == {}


def test_the_tally_counts_competitive_team_and_cooperative_games_alike():
    results = [
        GameResult(game_id=1, key="1", game="g", seats={"p1": "a", "p2": "b"}, teams=TWO,
                   returns={"p1": 1.0, "p2": -1.0}),
        GameResult(game_id=2, key="2", game="g", seats={"p1": "b", "p2": "a"}, teams=TWO,
                   returns={"p1": 0.0, "p2": 0.0}),
        GameResult(game_id=3, key="3", game="g", seats={"speaker": "a", "listener": "b"}, teams=COOP,
                   returns={"speaker": 1.0, "listener": 1.0}),
    ]  # fmt: skip
    t = tally(results)
    assert (t["a"].wins, t["a"].draws, t["a"].losses) == (2, 1, 0) and t["a"].points == 2.5
    assert (t["b"].wins, t["b"].draws, t["b"].losses) == (1, 1, 1) and str(t["b"]) == "1/1/1"
    table = standings_table(results, ["a", "b"], "g")
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    text = console.export_text()
    assert "2/1/0" in text and "1/1/1" in text and "2.5" in text


def test_tally_adds_outcomes():
    t = Tally()
    for o in ("win", "draw", "loss", "loss"):
        t.add(o)  # type: ignore[arg-type]
    assert str(t) == "1/1/2" and t.points == 1.5
