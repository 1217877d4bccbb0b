"""Run (or resume) a tournament: schedule, play what is missing, record each game the moment it ends.

Read top to bottom: :func:`run_tournament` opens the store, schedules each round (all of round robin is round 0;
Swiss schedules round r from the results of rounds < r, once, and stores it, so a resumed Swiss event keeps its
pairings), and plays the round's missing games in one :meth:`Runner.play` call, so every LLM turn of every game
in flight shares one batched backend call. The model loads only if a missing game needs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.envs import make
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.tournament.backends import build_backend, runner_specs
from llmmarl.tournament.config import GameSpec, RoundRobin, Swiss, TournamentConfig
from llmmarl.tournament.results import GameResult, tally
from llmmarl.tournament.schedule import ScheduledGame, round_robin, swiss_round
from llmmarl.tournament.store import StoredGame, TournamentStore


class Lineup(BaseModel):
    """What the schedule needs to know of a game: its seats in order, and whether all seats are one team."""

    seats: list[str]
    cooperative: bool


class RunSummary(BaseModel):
    tournament: str
    scheduled: int
    finished: int
    errors: int
    played_now: int
    seconds: float
    retried: int = 0  # games played again because the Ray actor playing them died


def lineup(game: GameSpec) -> Lineup:
    env = make(game.env, **game.env_kwargs)
    try:
        return Lineup(seats=list(env.possible_agents), cooperative=len(set(env.teams.values())) == 1)
    finally:
        env.close()


def run_tournament(
    config: TournamentConfig,
    *,
    console: Console | None = None,
    progress: bool = True,
    on_game: Callable[[EpisodeRecord], None] | None = None,
) -> RunSummary:
    """Play every scheduled game that the store has no result for. Safe to call again after any interruption.

    ``on_game`` is called after each game is stored (a hook for logging; raising from it stops the run, and
    the next call resumes after the last stored game).
    """
    console = console or Console()
    start = time.perf_counter()
    lineups = {g.key: lineup(g) for g in config.games}
    if isinstance(config.schedule, Swiss):
        bad = [k for k, lu in lineups.items() if lu.cooperative or len(lu.seats) != 2]
        if bad:
            raise ValueError(f"Swiss pairing needs two-seat competitive games; {bad} are not: use round_robin")
    with TournamentStore(config.db) as store:
        store.open_tournament(config.name, config.fingerprint(), config.model_dump(mode="json"))
        player = _Player(config, store, console, progress, on_game)
        try:
            if isinstance(config.schedule, RoundRobin):
                store.add_games(config.name, _round_robin(config, lineups))
                player.play(store.missing(config.name), "round robin")
            else:
                for r in range(config.schedule.rounds):
                    if not store.games(config.name, round=r):
                        store.add_games(config.name, _swiss_round(config, lineups, store, r))
                    player.play(store.missing(config.name, round=r), f"Swiss round {r + 1}/{config.schedule.rounds}")
        finally:
            player.close()
        counts = dict(zip(("scheduled", "finished", "errors"), store.counts(config.name), strict=True))
    return RunSummary(
        tournament=config.name,
        played_now=player.played,
        seconds=time.perf_counter() - start,
        retried=player.retried,
        **counts,
    )


# ---- scheduling -------------------------------------------------------------------------------------------------
def _round_robin(config: TournamentConfig, lineups: dict[str, Lineup]) -> list[ScheduledGame]:
    assert isinstance(config.schedule, RoundRobin)
    games = []
    for g in config.games:
        games += round_robin(
            g.key,
            g.env,
            lineups[g.key].seats,
            config.participant_names(),
            cooperative=lineups[g.key].cooperative,
            games_per_pairing=config.schedule.games_per_pairing,
            swap_seats=config.schedule.swap_seats,
            seed=config.seed,
            env_kwargs=g.env_kwargs,
        )
    return games


def _swiss_round(
    config: TournamentConfig, lineups: dict[str, Lineup], store: TournamentStore, r: int
) -> list[ScheduledGame]:
    assert isinstance(config.schedule, Swiss)
    names = config.participant_names()
    games: list[ScheduledGame] = []
    for g in config.games:
        earlier = [s for s in store.games(config.name) if s.game == g.key and s.round < r]
        byes = _byes(earlier, names, config.schedule.games_per_pairing)
        results = [x for x in store.results(config.name, game=g.key) if x.round < r]
        new, _ = swiss_round(
            g.key,
            g.env,
            lineups[g.key].seats,
            names,
            results,
            byes,
            round_index=r,
            games_per_pairing=config.schedule.games_per_pairing,
            seed=config.seed,
            env_kwargs=g.env_kwargs,
        )
        games += new
    return games


def _byes(games: Sequence[StoredGame], names: Sequence[str], per_pairing: int) -> list[tuple[str, int]]:
    """Byes of earlier rounds, recovered from the store: whoever a round's games left out had the bye."""
    out = []
    for r in sorted({g.round for g in games}):
        playing = {p for g in games if g.round == r for p in g.seats.values()}
        out += [(p, per_pairing) for p in names if p not in playing]
    return out


# ---- playing ----------------------------------------------------------------------------------------------------
class _Player:
    """Plays batches of stored games through one runner (built on first need), recording as games end."""

    def __init__(
        self,
        config: TournamentConfig,
        store: TournamentStore,
        console: Console,
        progress: bool,
        on_game: Callable[[EpisodeRecord], None] | None,
    ) -> None:
        self.config, self.store, self.console, self.progress, self.on_game = config, store, console, progress, on_game
        self.specs = runner_specs(config)
        self.runner: Runner | None = None
        self.pool: Any = None  # a distributed.RayPool when the config asks for Ray (ray is imported only then)
        self.played = 0
        self.retried = 0  # games replayed after their Ray actor died

    def close(self) -> None:
        if self.pool is not None:
            self.retried += self.pool.retried
            self.pool.close()
            self.pool = None

    def _play(self, matches: list[Match], on_episode: Callable[[EpisodeRecord], None]) -> None:
        if self.config.ray is None:
            self._runner_for(matches).play(matches, on_episode=on_episode)
            return
        if self.pool is None:
            from llmmarl.tournament.distributed import RayPool

            with self.console.status("starting Ray actors"):
                self.pool = RayPool(self.config, self.config.ray)
        self.pool.play(matches, on_episode)

    def _runner_for(self, matches: Sequence[Match]) -> Runner:
        has_llm = any(isinstance(spec, LLMAgentSpec) for m in matches for spec in m.seats.values())
        if self.runner is None or (has_llm and self.runner.backend is None):
            backend = None
            if has_llm:
                with self.console.status("loading models"):
                    # Every LLM participant at once: later rounds never reload.
                    backend = build_backend(self.config, set(self.specs))
            self.runner = Runner(
                backend, concurrency=self.config.concurrency, max_steps=self.config.max_steps, progress=False
            )
        return self.runner

    def play(self, games: Sequence[StoredGame], title: str) -> None:
        if not games:
            return
        matches = [
            Match(
                game_id=g.id,
                env=g.env,
                env_kwargs=g.env_kwargs,
                seats={s: self.specs[p] for s, p in g.seats.items()},
                seed=g.seed,
            )
            for g in games
        ]
        live = _LiveView(self.store, self.config, title, len(games)) if self.progress else None

        def on_episode(ep: EpisodeRecord) -> None:
            if self.store.record(ep):
                self.played += 1
            if live is not None:
                live.advance()
            if self.on_game is not None:
                self.on_game(ep)

        if live is None:
            self._play(matches, on_episode)
            return
        try:
            with Live(live.render(), console=self.console, refresh_per_second=4, transient=False) as view:
                live.view = view
                self._play(matches, on_episode)
                live.refresh(force=True)
        finally:
            if not self.console.is_terminal:  # rich ends its last render there without a newline
                self.console.line()


class _LiveView:
    """A progress bar over the round's games and the standings so far (points per game), refreshed ~2x/s."""

    def __init__(self, store: TournamentStore, config: TournamentConfig, title: str, total: int) -> None:
        self.store, self.config = store, config
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task(title, total=total)
        self.view: Live | None = None
        self._last = 0.0

    def advance(self) -> None:
        self.bar.advance(self.task)
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.view is not None and (force or now - self._last > 0.5):
            self._last = now
            self.view.update(self.render())

    def render(self) -> Group:
        names = self.config.participant_names()
        stats = self.store.seat_stats(self.config.name)
        tables = []
        for g in self.config.games:
            invalid = {s.participant: s.invalid_rate for s in stats if s.game == g.key}
            tables.append(standings_table(self.store.results(self.config.name, game=g.key), names, g.key, invalid))
        return Group(self.bar, *tables)


def standings_table(
    results: Sequence[GameResult],
    participants: Sequence[str],
    title: str,
    invalid: Mapping[str, float | None] | None = None,
) -> Table:
    """Live standings: games, wins/draws/losses, points, mean payoff, and the LLMs' invalid-answer rates."""
    invalid = invalid or {}
    table = Table(title=f"{title}: {len(results)} games", title_justify="left")
    for col in ("participant", "games", "W/D/L", "points", "mean payoff", "invalid"):
        table.add_column(col, justify="left" if col == "participant" else "right")
    games = {p: 0 for p in participants}
    payoff = {p: 0.0 for p in participants}
    for r in results:
        for seat, p in r.seats.items():
            games[p] += 1
            payoff[p] += r.returns.get(seat, 0.0)
    tallies = tally(results)
    for p in sorted(participants, key=lambda p: (-tallies[p].points, p)):
        rate = invalid.get(p)
        table.add_row(
            p,
            str(games[p]),
            str(tallies[p]),
            f"{tallies[p].points:g}",
            f"{payoff[p] / games[p]:+.3f}" if games[p] else "-",
            "-" if rate is None else f"{rate:.0%}",
        )
    return table
