"""The league: frozen snapshots of the learners, kept in a pool and drawn as opponents.

Sampling follows AlphaStar's prioritised fictitious self-play (Vinyals et al., 2019): with ``win_rate`` an
opponent is drawn with weight ``(1 - p)^2``, ``p`` the learner's score against it (win 1, draw 1/2, loss 0), so
the snapshots the learner still loses to come up most; with ``match_quality`` the weight is ``p (1 - p)``, largest
for even matches. Unplayed snapshots count as ``p = 1/2``. A floor keeps every snapshot in play.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, Field

_FLOOR = 0.05  # minimum weight, so a snapshot the learner always beats is still drawn now and then


class Snapshot(BaseModel):
    name: str = Field(description="Agent name in games and adapter name in the backend, e.g. ttt-s20.")
    learner: str = Field(description="The learner it was taken from.")
    step: int = Field(description="The update it was taken after.")
    path: str = Field(description="Its PEFT adapter folder.")
    games: int = 0
    score: float = Field(0.0, description="Sum of the learners' scores against it (win 1, draw 0.5, loss 0).")

    @property
    def learner_score(self) -> float:
        return self.score / self.games if self.games else 0.5


class League(BaseModel):
    pool_size: int
    sampling: Literal["uniform", "win_rate", "match_quality"] = "match_quality"
    snapshots: list[Snapshot] = Field(default_factory=list)

    def add(self, snapshot: Snapshot) -> list[Snapshot]:
        """Add a snapshot; returns the ones dropped to keep ``pool_size`` (oldest first)."""
        self.snapshots.append(snapshot)
        dropped = self.snapshots[: max(0, len(self.snapshots) - self.pool_size)]
        self.snapshots = self.snapshots[len(dropped) :]
        return dropped

    def weight(self, snapshot: Snapshot) -> float:
        p = snapshot.learner_score
        if self.sampling == "win_rate":
            return max(_FLOOR, (1.0 - p) ** 2)
        if self.sampling == "match_quality":
            return max(_FLOOR, p * (1.0 - p))
        return 1.0

    def sample(self, rng: random.Random) -> Snapshot:
        if not self.snapshots:
            raise RuntimeError("the league pool is empty: add a snapshot first")
        return rng.choices(self.snapshots, weights=[self.weight(s) for s in self.snapshots])[0]

    def record(self, name: str, learner_score: float) -> None:
        """Count one game a learner played against snapshot ``name`` (no-op for snapshots already dropped)."""
        for s in self.snapshots:
            if s.name == name:
                s.games += 1
                s.score += learner_score
