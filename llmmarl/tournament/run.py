"""Run (or resume) a tournament: schedule, play what is missing, record each game the moment it ends.

Read top to bottom: :func:`run_tournament` opens the store, schedules each round (all of round robin is round 0;
Swiss schedules round r from the results of rounds < r, once, and stores it, so a resumed Swiss event keeps its
pairings), and plays the round's missing games in one :meth:`Runner.play` call, so every LLM turn of every game
in flight shares one batched backend call. The model loads only if a missing game needs it.

Only games this config schedules are played, each built from the config's own game entry: a store is data (it may
be shared or downloaded to resume), and a game row it holds that the config does not describe is never built, only
reported (``RunSummary.unscheduled``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.envs import make
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.tournament.config import GameSpec, RoundRobin, Swiss, TournamentConfig
from llmmarl.tournament.results import GameResult, tally
from llmmarl.tournament.routing import RoutingBackend, build_routing_backend, runner_specs
from llmmarl.tournament.schedule import ScheduledGame, round_robin, swiss_round
from llmmarl.tournament.store import StoredGame, StoreError, TournamentStore


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
    unscheduled: int = 0  # game rows in the store that this config does not schedule: never played


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
    digests = config.adapter_digests()  # before the store opens: a missing adapter folder is a config error
    with TournamentStore(config.db) as store:
        _open(store, config, digests)
        player = _Player(config, store, console, progress, on_game)
        scheduled: list[StoredGame] = []
        try:
            if isinstance(config.schedule, RoundRobin):
                # add_games checks every stored game of the schedule against it; only those are played.
                games = store.add_games(config.name, _round_robin(config, lineups))
                scheduled += games
                player.play([g for g in games if not g.done], "round robin")
            else:
                for r in range(config.schedule.rounds):
                    games = store.games(config.name, round=r)
                    if not games:
                        games = store.add_games(config.name, _swiss_round(config, lineups, store, r))
                    games = [g for g in games if _fits(config, lineups, g) is None]
                    scheduled += games
                    player.play([g for g in games if not g.done], f"Swiss round {r + 1}/{config.schedule.rounds}")
        finally:
            player.close()
        ids = {g.id for g in scheduled}
        unscheduled = [g for g in store.games(config.name) if g.id not in ids]
        if unscheduled:
            _warn_unscheduled(console, config, lineups, unscheduled)
        counts = dict(zip(("scheduled", "finished", "errors"), store.counts(config.name, ids), strict=True))
    return RunSummary(
        tournament=config.name,
        played_now=player.played,
        seconds=time.perf_counter() - start,
        retried=player.retried,
        unscheduled=len(unscheduled),
        **counts,
    )


def _open(store: TournamentStore, config: TournamentConfig, digests: dict[str, str]) -> None:
    """Register the tournament or check that the store's games are this config's; a retrained adapter is named."""
    # The stored config keeps the digests too: the next resume can say which adapter changed, and exports show
    # which weights the games were played with.
    try:
        store.open_tournament(
            config.name, config.fingerprint(digests), {**config.model_dump(mode="json"), "adapter_weights": digests}
        )
    except StoreError:
        before = store.config(config.name).get("adapter_weights") or {}
        changed = sorted(name for name, digest in digests.items() if name in before and before[name] != digest)
        if not changed:
            raise
        adapters = {p.name: getattr(p, "adapter", None) for p in config.participants}
        raise StoreError(
            f"the weights of adapter(s) {', '.join(f'{n} ({adapters[n]})' for n in changed)} "
            f"changed since tournament {config.name!r} in {store.path} played its games (retrained or replaced): "
            "resuming would rate two versions as one. To rate the new weights, start a new tournament (change "
            "`name` or `db`); to finish this one, put the original adapter files back."
        ) from None


def _fits(config: TournamentConfig, lineups: dict[str, Lineup], game: StoredGame) -> str | None:
    """Why a stored game is not one this config could schedule (None: it could).

    A store is data, possibly shared or downloaded: its game rows name an environment and its kwargs, which the
    registry would build. Only games that the config itself describes are ever played, built from the config.
    """
    spec = next((g for g in config.games if g.key == game.game), None)
    if spec is None:
        return f"game {game.game!r} is not among the config's games"
    if (game.env, game.env_kwargs) != (spec.env, spec.env_kwargs):
        return f"env {game.env!r} with {game.env_kwargs} is not the config's {spec.env!r} with {spec.env_kwargs}"
    if list(game.seats) != lineups[spec.key].seats:
        return f"seats {list(game.seats)} are not the game's {lineups[spec.key].seats}"
    strangers = set(game.seats.values()) - set(config.participant_names())
    if strangers:
        return f"participants {sorted(strangers)} are not in the config"
    if isinstance(config.schedule, Swiss) and not 0 <= game.round < config.schedule.rounds:
        return f"round {game.round} is outside the config's {config.schedule.rounds} rounds"
    return None


def _warn_unscheduled(
    console: Console, config: TournamentConfig, lineups: dict[str, Lineup], games: Sequence[StoredGame]
) -> None:
    first = games[0]
    why = _fits(config, lineups, first) or "its key is not in the config's schedule"
    console.print(
        f"[yellow]warning:[/] {escape(str(config.db))} holds {len(games)} game(s) under {escape(config.name)!r} that "
        f"this config does not schedule; they were not played and are not counted. The first, "
        f"{escape(repr(first.key))}: {escape(why)}. A store someone else wrote may hold anything: resume only your own."
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
    # Only the games of earlier rounds that this config could have scheduled count (see _fits).
    fit = [s for s in store.games(config.name) if s.round < r and _fits(config, lineups, s) is None]
    fit_ids = {s.id for s in fit}
    for g in config.games:
        earlier = [s for s in fit if s.game == g.key]
        byes = _byes(earlier, names, config.schedule.games_per_pairing)
        results = [x for x in store.results(config.name, game=g.key) if x.game_id in fit_ids]
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
        if self.runner is not None and isinstance(self.runner.backend, RoutingBackend):
            self.runner.backend.close()  # a backend kind that started a server stops it

    def _play(self, matches: list[Match], on_episode: Callable[[EpisodeRecord], None]) -> None:
        if self.config.ray is None:
            # Records stream to the store and are dropped: a long round robin keeps none of them in memory.
            self._runner_for(matches).play(matches, on_episode=on_episode, keep=False)
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
                    backend = build_routing_backend(self.config, set(self.specs))
            self.runner = Runner(
                backend, concurrency=self.config.concurrency, max_steps=self.config.max_steps, progress=False
            )
        return self.runner

    def play(self, games: Sequence[StoredGame], title: str) -> None:
        if not games:
            return
        specs = {spec.key: spec for spec in self.config.games}
        matches = [
            Match(
                game_id=g.id,
                # The config's environment, never the stored row's (run_tournament checked that they agree).
                env=specs[g.game].env,
                env_kwargs=specs[g.game].env_kwargs,
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
            escape(p),  # a name from a shared config: text, never markup
            str(games[p]),
            str(tallies[p]),
            f"{tallies[p].points:g}",
            f"{payoff[p] / games[p]:+.3f}" if games[p] else "-",
            "-" if rate is None else f"{rate:.0%}",
        )
    return table
