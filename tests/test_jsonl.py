"""JSONL files survive a torn last line: a run killed mid-write, then resumed, keeps every complete row."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmmarl.agents.specs import ScriptedAgentSpec
from llmmarl.jsonl import TornLineWarning, end_torn_line
from llmmarl.records import read_episodes
from llmmarl.runner import Match, Runner
from llmmarl.train.metrics import MetricsRow, append_metrics, read_metrics


def _tear(path: Path) -> None:
    """What a kill mid-write leaves: the file ends halfway through its last line."""
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])


def _row(step: int) -> MetricsRow:
    return MetricsRow(step=step, learners={"ann": {"loss": 0.5 * step, "game/return": float("nan")}})


def test_metrics_rows_appended_after_a_torn_line_all_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    for step in (1, 2, 3):
        append_metrics(path, _row(step))
    _tear(path)  # row 3 cut by a kill
    append_metrics(path, _row(4))  # the resumed run
    append_metrics(path, _row(5))
    torn: list[int] = []
    with pytest.warns(TornLineWarning, match=r"skipped 1 torn line\(s\) \(line 3\)"):
        rows = read_metrics(path, torn)
    assert [r.step for r in rows] == [1, 2, 4, 5] and torn == [3]
    assert rows[-1].learners is not None and rows[-1].learners["ann"]["loss"] == 2.5


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2):
        append_metrics(path, _row(step))
    _tear(path)
    with pytest.warns(TornLineWarning):
        assert [r.step for r in read_metrics(path)] == [1]


def test_a_complete_line_that_is_no_row_still_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, _row(1))
    with path.open("a") as f:
        f.write('{"steps": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics row \(step: Field required\)"):
        read_metrics(path)


def test_a_row_glued_by_an_older_version_is_recovered(tmp_path: Path) -> None:
    """Files written before appends ended torn lines hold the next row glued to the fragment: it comes back."""
    path = tmp_path / "metrics.jsonl"
    fragment = _row(1).to_json()[:25]
    path.write_text(fragment + _row(2).to_json() + "\n" + _row(3).to_json() + "\n")
    torn: list[int] = []
    with pytest.warns(TornLineWarning):
        assert [r.step for r in read_metrics(path, torn)] == [2, 3]
    assert torn == [1]


def _matches(first: int, n: int) -> list[Match]:
    a, b = (ScriptedAgentSpec(name=n, policy="random") for n in "ab")
    seats = {"player_1": a, "player_2": b}
    return [Match(game_id=i, env="tictactoe_v3", seats=seats, seed=i) for i in range(first, first + n)]


def test_episodes_appended_after_a_torn_line_all_read_back(tmp_path: Path) -> None:
    out = tmp_path / "games.jsonl"
    Runner(None, out=out, progress=False).play(_matches(0, 3))
    _tear(out)  # game 2 cut short by a kill
    Runner(None, out=out, progress=False).play(_matches(3, 2))  # the same transcript, appended to
    torn: list[int] = []
    with pytest.warns(TornLineWarning, match=r"line 3\)"):
        games = sorted(int(ep.game_id) for ep in read_episodes(out, torn))
    assert games == [0, 1, 3, 4] and torn == [3]


def test_end_torn_line_only_touches_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    assert not end_torn_line(path)  # no file
    path.write_text("")
    assert not end_torn_line(path) and path.read_text() == ""
    path.write_text('{"a": 1}\n')
    assert not end_torn_line(path) and path.read_text() == '{"a": 1}\n'
    path.write_text('{"a": 1}\n{"b"')
    assert end_torn_line(path) and path.read_text() == '{"a": 1}\n{"b"\n'
