"""What a run plays: a :class:`Match` (game, seats, seed), seat assignments, and each LLM request's sampling seed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from llmmarl.agents.specs import AgentSpec
from llmmarl.envs.base import TextEnv


class Match(BaseModel):
    """One game to play: which game, who sits where, which seed."""

    game_id: int | str
    env: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    seats: dict[str, AgentSpec] = Field(description="Seat (env agent name) -> agent spec.")
    seed: int


def request_seed(match: Match, step: int, seat: str, attempt: int) -> int:
    """The sampling seed of one LLM answer: a hash of the game (seed and id), turn, seat and attempt (0, re-ask 1).

    Seeding each request, not each backend call, makes a game's moves independent of which games share its
    batches, of concurrency and of how many workers play the schedule. The game id is part of it because games of
    one training group share their seed (the same deal) and must still draw different answers.
    """
    key = f"{match.seed}|{match.game_id}|{step}|{seat}|{attempt}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 2**31


def seatings(env: TextEnv, agents: Sequence[AgentSpec], games: int, rotate: bool = True) -> list[dict[str, AgentSpec]]:
    """Assign agents to seats for ``games`` games; with ``rotate`` each agent takes every seat in turn.

    With fewer agents than seats the list is cycled (``--agents llm`` in a 2-seat game is self-play).
    """
    seats = env.possible_agents
    if not agents:
        raise ValueError("at least one agent is needed")
    out = []
    for g in range(games):
        shift = g % len(agents) if rotate else 0
        out.append({seat: agents[(i + shift) % len(agents)] for i, seat in enumerate(seats)})
    return out
