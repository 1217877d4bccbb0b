"""The games progress bar: no time estimate until the rate of finished games can predict the rest."""

from __future__ import annotations

import re

import pytest

from llmmarl.agents.specs import ScriptedAgentSpec
from llmmarl.progress import COUNT_ONLY, bar_format, games_before_estimate
from llmmarl.runner import Match, Runner


@pytest.mark.parametrize(
    ("total", "concurrency", "first"),
    [(96, 96, 96), (96, 200, 96), (1000, 8, 8), (5, 1, 1), (3, 0, 1)],
)
def test_the_estimate_waits_for_the_first_wave_of_games(total: int, concurrency: int, first: int) -> None:
    assert games_before_estimate(total, concurrency) == first
    assert bar_format(first - 1, total, concurrency) == COUNT_ONLY
    assert bar_format(first, total, concurrency) is None  # tqdm's own layout, with the time left


def _frames(err: str) -> list[tuple[int, str]]:
    """Each redraw of the bar: (games finished, the text)."""
    out = []
    for frame in re.split(r"[\r\n]+", err):
        if m := re.search(r"\| (\d+)/\d+ \[", frame):
            out.append((int(m.group(1)), frame))
    return out


def test_no_estimate_is_drawn_before_a_whole_wave_of_games_has_ended(capsys: pytest.CaptureFixture[str]) -> None:
    """Two games in flight, six to play: the first finished game's rate would put the end at five game lengths."""
    random_ = ScriptedAgentSpec(name="random", policy="random")
    minimax = ScriptedAgentSpec(name="minimax", policy="minimax")
    matches = [
        Match(game_id=i, env="tictactoe_v3", seats={"player_1": random_, "player_2": minimax}, seed=i) for i in range(6)
    ]
    Runner(None, concurrency=2, progress=True).play(matches)
    frames = _frames(capsys.readouterr().err)
    early = [text for n, text in frames if n < 2]
    late = [text for n, text in frames if n >= 2]
    assert early and late
    assert not any("<" in text or "game/s" in text for text in early)  # tqdm's default shows "<?" from the start
    assert all(re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+game/s", text) for text in late)
