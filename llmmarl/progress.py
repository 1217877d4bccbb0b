"""The games progress bar: a count of finished games whose time estimate waits until the rate means something.

tqdm estimates the time left as the games left over the rate of finished games. The runner keeps ``concurrency``
games in flight, so the first games end together only after a whole game's time: a rate taken from the first
finished game is one game per game length, and the estimate is the game length times every game left (2:44:04
for the demo's 96 games, all in flight at once, that take 1.5 minutes). Once a full first wave has ended, the
games end at the pipeline's steady rate, and the average rate since the start predicts the rest.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

# tqdm's own layout without `<{remaining}` and the rate: both come from the finished games only.
COUNT_ONLY = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def games_before_estimate(total: int, concurrency: int) -> int:
    """How many games must have ended before the rate of ended games predicts the rest: the first full wave."""
    return min(total, max(concurrency, 1))


def bar_format(finished: int, total: int, concurrency: int) -> str | None:
    """The bar's layout after ``finished`` games: the count only until the first wave has ended, then tqdm's own
    (None) with the time left and the rate."""
    return None if finished >= games_before_estimate(total, concurrency) else COUNT_ONLY


def games_bar(total: int, concurrency: int, desc: str, disable: bool) -> Any:
    """A bar over ``total`` games played ``concurrency`` at a time; call :func:`count_game` after each game.

    ``smoothing=0``: the rate is the average since the start. Games end in bursts (one round ends many of them),
    so the rate between two redraws, which tqdm's default smoothing follows, swings between zero and a burst.
    """
    return tqdm(
        total=total,
        desc=desc,
        unit="game",
        disable=disable,
        dynamic_ncols=True,
        smoothing=0,
        bar_format=bar_format(0, total, concurrency),
    )


def count_game(bar: Any, concurrency: int) -> None:
    """Count one finished game; the time estimate appears once the first wave of games has ended."""
    bar.bar_format = bar_format(bar.n + 1, bar.total or 0, concurrency)
    bar.update(1)
