"""Deterministic schedules: the same config gives the same games, with the same keys and seeds, every time.

Every game has a *key* that says what it is (``"tictactoe_v3|rr|player_0=llm,player_1=random|g3"``) and a seed
derived from the tournament seed and the key's *pairing* part by SHA-256 - not from a counter - so seeds never
shift when a game is added, removed or played in another order. The seat orders of one pairing share their
seeds ("duplicate" format, as in duplicate bridge and poker AI evaluation): A-vs-B game 3 and B-vs-A game 3 get
the same cards, so luck of the deal cancels out of the pairing's total.

* :func:`round_robin` - every group of participants of the game's size, in every seat rotation, N games each.
  Competitive games use distinct participants; cooperative games (every seat one team) take groups *with*
  repetition, so the schedule holds self-play (A with A) next to cross-play (A with B).
* :func:`swiss_round` - one Swiss round from the standings so far (Monrad-style: pair neighbours in the
  standings, never a rematch when a rematch-free pairing exists, a bye for odd fields, seats balanced).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations, combinations_with_replacement
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmmarl.tournament.results import GameResult


class ScheduledGame(BaseModel):
    """One game to play: unique within its tournament by ``key``."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Unique name of the game: game label, format, round, seating, game index.")
    round: int = Field(0, description="Schedule round (round robin: 0; Swiss: 0, 1, ...).")
    game: str = Field(description="Game label (GameSpec.key).")
    env: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    seats: dict[str, str] = Field(description="Seat -> participant name.")
    seed: int = Field(description="Environment and scripted-policy seed.")


def derive_seed(*parts: object) -> int:
    """A 32-bit seed from the parts' text (SHA-256): stable across runs, platforms and Python versions.

    32 bits because some games pass the seed to ``np.random.seed``, which takes nothing larger.
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def rotations(group: Sequence[str]) -> list[tuple[str, ...]]:
    """Distinct cyclic seat orders of a group: each member takes each seat once ((A, A) has one order)."""
    out: list[tuple[str, ...]] = []
    for k in range(len(group)):
        order = tuple(group[k:]) + tuple(group[:k])
        if order not in out:
            out.append(order)
    return out


def _game(
    game: str,
    env: str,
    env_kwargs: dict[str, Any],
    fmt: str,
    rnd: int,
    seats: Sequence[str],
    order: Sequence[str],
    i: int,
    deal: int,
    seed: int,
) -> ScheduledGame:
    seating = dict(zip(seats, order, strict=True))
    where = ",".join(f"{s}={p}" for s, p in seating.items())
    round_part = f"|r{rnd}" if fmt == "swiss" else ""
    return ScheduledGame(
        key=f"{game}|{fmt}{round_part}|{where}|g{i}",
        round=rnd,
        game=game,
        env=env,
        env_kwargs=env_kwargs,
        seats=seating,
        # The pairing (as a sorted multiset) and the deal index, not the seat order: seat swaps share deals.
        seed=derive_seed(seed, game, fmt, rnd, ",".join(sorted(order)), deal),
    )


def round_robin(
    game: str,
    env: str,
    seats: Sequence[str],
    participants: Sequence[str],
    *,
    cooperative: bool,
    games_per_pairing: int,
    swap_seats: bool = True,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> list[ScheduledGame]:
    """The full round-robin schedule of one game: pairings x seat orders x ``games_per_pairing``."""
    n = len(seats)
    if not cooperative and len(participants) < n:
        raise ValueError(f"{game} has {n} seats but only {len(participants)} participants: add participants")
    groups = combinations_with_replacement(participants, n) if cooperative else combinations(participants, n)
    seatings = [order for group in groups for order in (rotations(group) if swap_seats else [tuple(group)])]
    # Game index outermost: every pairing advances together, so live standings, the online OpenSkill update
    # (which sees games in this order) and a run stopped halfway all get a balanced sample.
    return [
        _game(game, env, env_kwargs or {}, "rr", 0, seats, order, i, i, seed)
        for i in range(games_per_pairing)
        for order in seatings
    ]


# ---- Swiss ----------------------------------------------------------------------------------------------------
class Standing(BaseModel):
    participant: str
    points: float = Field(0.0, description="1 per win, 0.5 per draw (byes count as wins of a whole pairing).")
    buchholz: float = Field(0.0, description="Sum of the points of every opponent met (the usual Swiss tie-break).")
    games: int = 0
    first_seat: int = Field(0, description="Games played in the first seat minus games in the second.")
    byes: int = 0


def standings(
    participants: Sequence[str], results: Sequence[GameResult], byes: Sequence[tuple[str, int]] = ()
) -> list[Standing]:
    """Swiss standings, best first: points, then Buchholz, then the participants' listed (seeding) order.

    ``byes`` are (participant, games) pairs: a bye is worth a won pairing of that many games (FIDE counts a
    bye as a win). Broken games score nothing for anyone.
    """
    table = {p: Standing(participant=p) for p in participants}
    opponents: dict[str, list[str]] = defaultdict(list)
    for r in results:
        points = r.points()
        seats = list(r.seats)  # the env's seat order: seats[0] moves first
        for s in seats:
            st = table[r.seats[s]]
            st.points += points.get(s, 0.0)
            st.games += 1
            st.first_seat += 1 if s == seats[0] else -1 if s == seats[-1] else 0
            opponents[r.seats[s]] += [r.seats[t] for t in seats if r.teams[t] != r.teams[s]]
    for p, games in byes:
        table[p].points += games
        table[p].byes += 1
    for p, st in table.items():
        st.buchholz = sum(table[o].points for o in opponents[p])
    seeding = {p: i for i, p in enumerate(participants)}
    return sorted(table.values(), key=lambda s: (-s.points, -s.buchholz, seeding[s.participant]))


def _pair(
    order: list[str], met: set[frozenset[str]], allow_rematch: bool, budget: list[int]
) -> list[tuple[str, str]] | None:
    """Pair ``order`` (best first) top-down, each with the nearest unpaired player it may meet (backtracking)."""
    if not order:
        return []
    budget[0] -= 1
    if budget[0] < 0:
        return None
    top, rest = order[0], order[1:]
    for k, other in enumerate(rest):
        if not allow_rematch and frozenset((top, other)) in met:
            continue
        tail = _pair(rest[:k] + rest[k + 1 :], met, allow_rematch, budget)
        if tail is not None:
            return [(top, other), *tail]
    return None


def pair_swiss(
    ranked: Sequence[str], met: set[frozenset[str]], had_bye: set[str]
) -> tuple[list[tuple[str, str]], str | None]:
    """Pairs for one round from participants ranked best first, and the bye (odd fields) or None.

    The bye goes to the lowest-ranked player without one. Rematches happen only when no rematch-free
    pairing exists (small fields late in the event); the search is bounded so large fields stay fast.
    """
    order = list(ranked)
    bye = None
    if len(order) % 2:
        candidates = [p for p in reversed(order) if p not in had_bye] or list(reversed(order))
        bye = candidates[0]
        order.remove(bye)
    pairs = _pair(order, met, allow_rematch=False, budget=[100_000])
    if pairs is None:
        pairs = _pair(order, met, allow_rematch=True, budget=[10**9])
    assert pairs is not None  # with rematches allowed, neighbours always pair
    return pairs, bye


def swiss_round(
    game: str,
    env: str,
    seats: Sequence[str],
    participants: Sequence[str],
    results: Sequence[GameResult],
    byes: Sequence[tuple[str, int]],
    *,
    round_index: int,
    games_per_pairing: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[list[ScheduledGame], str | None]:
    """The games of Swiss round ``round_index`` given every earlier result, and the player with the bye.

    Seats: a pairing's games alternate seat orders; with an odd count the extra first seat goes to the player
    who has had the first seat less often so far (then to the lower-ranked one), like colour allocation in chess.
    """
    if len(seats) != 2:
        raise ValueError(f"Swiss pairing needs a two-seat game; {game} has seats {list(seats)}: use round_robin")
    table = standings(participants, results, byes)
    met = {frozenset(r.seats.values()) for r in results}
    pairs, bye = pair_swiss([s.participant for s in table], met, {p for p, _ in byes})
    balance = {s.participant: s.first_seat for s in table}
    rank = {s.participant: i for i, s in enumerate(table)}
    out = []
    for a, b in pairs:
        # `first` gets the first seat in even-indexed games; it is whoever needs the first seat more.
        first, second = sorted((a, b), key=lambda p: (balance[p], -rank[p]))
        for i in range(games_per_pairing):
            order = (first, second) if i % 2 == 0 else (second, first)
            # Games 2k and 2k+1 are one deal played from both sides.
            out.append(_game(game, env, env_kwargs or {}, "swiss", round_index, seats, order, i, i // 2, seed))
    return out, bye


def seat_counts(games: Sequence[ScheduledGame]) -> dict[str, Counter[str]]:
    """Participant -> how many games it plays in each seat (for checking balance)."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for g in games:
        for seat, p in g.seats.items():
            out[p][seat] += 1
    return dict(out)
