"""The tournament store: one SQLite file (stdlib sqlite3, WAL) holding schedules and results.

Tables (one row per...)::

    tournaments   tournament: name, fingerprint of the config parts that decide the games, the config JSON
    games         scheduled game: UNIQUE (tournament, key); id is the runner's game_id
    results       finished game: game_id is the PRIMARY KEY, so a game is recorded at most once
    seat_results  seat of a finished game: participant, team, payoff, outcome, LLM turn and invalid counts

Resuming is set difference: the games of a round without a result row, or whose result is an outage (a game
the server's failure stopped, ``EpisodeRecord.outage``): such a game is played again, and its new result
replaces the outage row. Each game is written in its own
transaction the moment it ends, and WAL with ``synchronous=NORMAL`` keeps every committed transaction through a
killed process (only a power cut may lose the last few). A result arriving twice (a replayed game) is refused
by ``INSERT ... ON CONFLICT DO NOTHING`` on the primary key and reported as not recorded.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmmarl.records import EpisodeRecord
from llmmarl.tournament.results import GameResult
from llmmarl.tournament.schedule import ScheduledGame

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tournaments (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    config      TEXT NOT NULL,
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS games (
    id          INTEGER PRIMARY KEY,
    tournament  TEXT NOT NULL REFERENCES tournaments(name),
    key         TEXT NOT NULL,
    round       INTEGER NOT NULL,
    game        TEXT NOT NULL,
    env         TEXT NOT NULL,
    env_kwargs  TEXT NOT NULL,
    seats       TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    UNIQUE (tournament, key)
);
CREATE TABLE IF NOT EXISTS results (
    game_id     INTEGER PRIMARY KEY REFERENCES games(id),
    finished    REAL NOT NULL,
    error       TEXT,
    forfeit     TEXT,
    episode     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seat_results (
    game_id     INTEGER NOT NULL REFERENCES results(game_id),
    seat        TEXT NOT NULL,
    participant TEXT NOT NULL,
    team        TEXT NOT NULL,
    return      REAL,
    outcome     TEXT,
    decisions   INTEGER NOT NULL,
    llm_turns   INTEGER NOT NULL,
    invalid     INTEGER NOT NULL,
    fallbacks   INTEGER NOT NULL,
    tokens      INTEGER NOT NULL,
    PRIMARY KEY (game_id, seat)
);
CREATE INDEX IF NOT EXISTS games_by_round ON games (tournament, round);
"""


# A stored result that is an outage (SQL over the results row ``r``): the game is to be played again.
_OUTAGE = "COALESCE(json_extract(r.episode, '$.outage'), 0) = 1"


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says how to fix it."""


class StoredGame(ScheduledGame):
    id: int
    done: bool = False


class SeatStats(BaseModel):
    """Per participant and game: turn counts behind the invalid-action rates."""

    participant: str
    game: str
    games: int
    decisions: int
    llm_turns: int
    invalid: int
    fallbacks: int
    tokens: int

    @property
    def invalid_rate(self) -> float | None:
        return self.invalid / self.llm_turns if self.llm_turns else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.llm_turns if self.llm_turns else None


class TournamentStore:
    """Open (or create) a store file. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE), one per written game.
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(f"{self.path} has store schema {version}; this llmmarl reads {SCHEMA_VERSION}")
        self.conn.executescript(_SCHEMA)
        self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def __enter__(self) -> TournamentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---- tournaments ----------------------------------------------------------------------------------------
    def open_tournament(self, name: str, fingerprint: str, config: dict[str, Any]) -> bool:
        """Register a tournament, or check that an existing one has the same games. True if it is new."""
        row = self.conn.execute("SELECT fingerprint FROM tournaments WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self._transaction() as c:
                c.execute(
                    "INSERT INTO tournaments (name, fingerprint, config, created) VALUES (?, ?, ?, ?)",
                    (name, fingerprint, json.dumps(config, sort_keys=True), time.time()),
                )
            return True
        if row["fingerprint"] != fingerprint:
            raise StoreError(
                f"{self.path} already holds tournament {name!r} with other games, participants, schedule or seed. "
                f"To resume it, use its original config; to start a new one, change `name` or `db`."
            )
        with self._transaction() as c:  # same games; options that do not change them (scoring...) may have
            c.execute("UPDATE tournaments SET config = ? WHERE name = ?", (json.dumps(config, sort_keys=True), name))
        return False

    def tournaments(self) -> list[str]:
        return [r["name"] for r in self.conn.execute("SELECT name FROM tournaments ORDER BY created, name")]

    def config(self, name: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT config FROM tournaments WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no tournament {name!r} in {self.path}; it has: {self.tournaments() or 'none'}")
        return json.loads(row["config"])

    # ---- schedule ---------------------------------------------------------------------------------------------
    def add_games(self, tournament: str, games: Sequence[ScheduledGame]) -> list[StoredGame]:
        """Insert scheduled games (those already there are kept) and return them all, with ids, in order.

        A game already stored under the same key must match exactly: a schedule that changed under the same
        key means the schedule code is not deterministic, and mixing the two would corrupt the tournament.
        """
        with self._transaction() as c:
            c.executemany(
                "INSERT INTO games (tournament, key, round, game, env, env_kwargs, seats, seed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tournament, key) DO NOTHING",
                [
                    # Seats keep the env's seat order (it says who moves first); kwargs are sorted.
                    (
                        tournament,
                        g.key,
                        g.round,
                        g.game,
                        g.env,
                        json.dumps(g.env_kwargs, sort_keys=True),
                        json.dumps(g.seats),
                        g.seed,
                    )
                    for g in games
                ],
            )
        stored = {g.key: g for g in self.games(tournament)}
        out = []
        for g in games:
            s = stored[g.key]
            if ScheduledGame.model_validate(s.model_dump(exclude={"id", "done"})) != g:
                raise StoreError(
                    f"game {g.key!r} is stored with another env, seats, seed or kwargs than scheduled now "
                    "(nothing was played: is this store your own?)"
                )
            out.append(s)
        return out

    def games(self, tournament: str, round: int | None = None) -> list[StoredGame]:
        """Scheduled games in schedule order, each marked ``done`` once its result is stored."""
        sql, args = _filtered(
            f"SELECT g.*, r.game_id IS NOT NULL AND NOT {_OUTAGE} AS done FROM games g "
            "LEFT JOIN results r ON r.game_id = g.id",
            tournament=tournament,
            round=round,
        )
        rows = self.conn.execute(sql + " ORDER BY g.id", args).fetchall()
        return [StoredGame.model_validate(_fields(r, ("env_kwargs", "seats"), done=bool(r["done"]))) for r in rows]

    def missing(self, tournament: str, round: int | None = None) -> list[StoredGame]:
        """Games to play: no result yet, or only an outage (see the module docstring)."""
        return [g for g in self.games(tournament, round) if not g.done]

    # ---- results ----------------------------------------------------------------------------------------------
    def record(self, episode: EpisodeRecord) -> bool:
        """Store a finished game in one transaction. False if that game already had a result (nothing written).

        An outage result is not a result: a later episode of the same game replaces it.
        """
        row = self.conn.execute("SELECT seats, seed FROM games WHERE id = ?", (episode.game_id,)).fetchone()
        if row is None:
            raise StoreError(f"episode for game id {episode.game_id}, which this store never scheduled")
        if json.loads(row["seats"]) != episode.seats or row["seed"] != episode.seed:
            raise StoreError(f"episode {episode.game_id} has other seats or seed than its scheduled game")
        with self._transaction() as c:
            outage = f"SELECT game_id FROM results r WHERE r.game_id = ? AND {_OUTAGE}"
            c.execute(f"DELETE FROM seat_results WHERE game_id IN ({outage})", (episode.game_id,))
            c.execute(f"DELETE FROM results WHERE game_id IN ({outage})", (episode.game_id,))
            cur = c.execute(
                "INSERT INTO results (game_id, finished, error, forfeit, episode) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (game_id) DO NOTHING",
                (episode.game_id, time.time(), episode.error, episode.forfeit, episode.model_dump_json()),
            )
            if cur.rowcount == 0:
                return False
            c.executemany(
                "INSERT INTO seat_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_seat_row(episode, seat) for seat in episode.seats],
            )
        return True

    def results(self, tournament: str, game: str | None = None, include_errors: bool = False) -> list[GameResult]:
        """Finished games in game-id (schedule) order, as :class:`GameResult`."""
        sql = (
            "SELECT g.id, g.key, g.game, g.round, g.seats, g.seed, r.error, "
            "json_group_object(s.seat, s.team) AS teams, json_group_object(s.seat, s.return) AS returns "
            "FROM games g JOIN results r ON r.game_id = g.id JOIN seat_results s ON s.game_id = g.id"
        )
        sql, args = _filtered(sql, tournament=tournament, game=game)
        out = []
        for r in self.conn.execute(sql + " GROUP BY g.id ORDER BY g.id", args):
            if r["error"] is not None and not include_errors:
                continue
            returns = json.loads(r["returns"])
            returns = {} if r["error"] is not None else {k: float(v) for k, v in returns.items()}
            out.append(GameResult.model_validate(_fields(r, ("seats", "teams"), game_id=r["id"], returns=returns)))
        return out

    def seat_stats(self, tournament: str) -> list[SeatStats]:
        rows = self.conn.execute(
            "SELECT s.participant, g.game, COUNT(*) AS games, SUM(decisions) AS decisions, "
            "SUM(llm_turns) AS llm_turns, SUM(invalid) AS invalid, SUM(fallbacks) AS fallbacks, "
            "SUM(tokens) AS tokens FROM seat_results s JOIN games g ON g.id = s.game_id "
            "WHERE g.tournament = ? GROUP BY s.participant, g.game ORDER BY g.game, s.participant",
            (tournament,),
        )
        return [SeatStats(**dict(r)) for r in rows]

    def episode(self, game_id: int) -> EpisodeRecord:
        row = self.conn.execute("SELECT episode FROM results WHERE game_id = ?", (game_id,)).fetchone()
        if row is None:
            raise StoreError(f"no result for game id {game_id}")
        return EpisodeRecord.model_validate_json(row["episode"])

    def counts(self, tournament: str, ids: Collection[int] | None = None) -> tuple[int, int, int]:
        """(scheduled, finished, finished with an error); outages count as neither (they are played again).

        ``ids`` restricts the counts to those games (the ones a config schedules); None counts every stored game.
        """
        rows = self.conn.execute(
            f"SELECT g.id, r.game_id IS NOT NULL AND NOT {_OUTAGE} AS done, r.error IS NOT NULL AND NOT {_OUTAGE} "
            "AS failed FROM games g LEFT JOIN results r ON r.game_id = g.id WHERE g.tournament = ?",
            (tournament,),
        ).fetchall()
        if ids is not None:
            rows = [r for r in rows if r["id"] in ids]
        return len(rows), sum(bool(r["done"]) for r in rows), sum(bool(r["failed"]) for r in rows)

    # ---- export -----------------------------------------------------------------------------------------------
    _EXPORT_SQL = (
        "SELECT g.id AS game_id, g.key, g.round, g.game, g.env, g.seed, s.seat, s.participant, s.team, "
        "s.return, s.outcome, s.decisions, s.llm_turns, s.invalid, s.fallbacks, s.tokens, r.error, r.forfeit "
        "FROM games g JOIN results r ON r.game_id = g.id JOIN seat_results s ON s.game_id = g.id "
        "WHERE g.tournament = ? ORDER BY g.id, s.rowid"
    )

    def export_csv(self, tournament: str, path: str | Path) -> Path:
        """One row per seat of each finished game (transcripts stay in the store)."""
        rows = self.conn.execute(self._EXPORT_SQL, (tournament,)).fetchall()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(rows[0].keys() if rows else ["game_id"])
            writer.writerows(tuple(r) for r in rows)
        return path

    def export_json(self, tournament: str, path: str | Path, episodes: bool = False) -> Path:
        """The tournament's config, its scheduled games and their per-seat results; ``episodes`` adds transcripts."""
        seats: dict[int, list[dict[str, Any]]] = {}
        for r in self.conn.execute(self._EXPORT_SQL, (tournament,)):
            seats.setdefault(r["game_id"], []).append(
                {k: r[k] for k in ("seat", "participant", "team", "return", "outcome", "invalid", "llm_turns")}
            )
        games = []
        for g in self.games(tournament):
            item: dict[str, Any] = {**g.model_dump(), "seat_results": seats.get(g.id, [])}
            if episodes and g.done:
                item["episode"] = self.episode(g.id).model_dump(mode="json")
            games.append(item)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"tournament": tournament, "config": self.config(tournament), "games": games}
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return path


def _seat_row(ep: EpisodeRecord, seat: str) -> tuple[Any, ...]:
    turns = [t for t in ep.turns if t.seat == seat]
    llm = [t for t in turns if t.attempts]
    return (
        ep.game_id,
        seat,
        ep.seats[seat],
        ep.teams.get(seat, seat),
        ep.returns.get(seat),
        ep.outcomes.get(seat),
        len(turns),
        len(llm),
        sum(t.invalid for t in llm),
        sum(t.fallback is not None for t in llm),
        sum(len(a.completion_ids) for t in llm for a in t.attempts),
    )


def _fields(row: sqlite3.Row, json_columns: Sequence[str], **fields: Any) -> dict[str, Any]:
    """A row's columns by name, the ``json_columns`` decoded, then ``fields`` added or replaced: what a model
    validates (columns it has no field for are ignored)."""
    out = dict(zip(row.keys(), row, strict=True))  # a sqlite3.Row iterates over its values
    out.update({k: json.loads(row[k]) for k in json_columns})
    return out | fields


def _filtered(select: str, **columns: Any) -> tuple[str, tuple[Any, ...]]:
    """``select`` with ``WHERE g.<column> = ?`` for every column given a value (None = no filter)."""
    given = {k: v for k, v in columns.items() if v is not None}
    where = " AND ".join(f"g.{k} = ?" for k in given)  # keys are our own keyword names, never user input
    return (f"{select} WHERE {where}" if given else select), tuple(given.values())
