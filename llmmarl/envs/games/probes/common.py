"""What the probe games share: neutral words, the per-seed draw of which one pays, and the one-decision skeleton.

A probe is a tiny game whose optimal policy is known, so that an algorithm that fails it points at one part of the
machinery (``docs/learning.md``). Its labels are neutral words, and which word pays (or how cues map to words) is
drawn from the game's ``seed`` keyword, fixed for a whole run: across seeds every word pays as often, so a base
model's liking for one word cannot pass a probe. The reset seed draws what changes game by game (a cue, a goal).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TypeVar

from llmmarl.envs.base import Observation, TextEnv

#: Label words: common, short, with no meaning in these games and no order among them.
WORDS = ("amber", "slate", "olive", "coral", "ivory", "cedar", "flint", "maple")
#: Cue words of the contextual probe (what the observation names).
CUES = ("north", "south", "east", "west")
#: Message words of the speaker-listener probe: meaningless syllables, so a convention must be learned.
SYMBOLS = ("zup", "kel", "mov", "tib")


P = TypeVar("P", bound=TextEnv)


def as_probe(env: TextEnv, kind: type[P]) -> P:
    """``env`` as the probe a bot plays: an optimal bot reads the probe's hidden answer, so only that probe."""
    if not isinstance(env, kind):
        raise ValueError(f"this bot plays {kind.__name__} only, not {type(env).__name__}")
    return env


def draw(seed: int, salt: str, items: tuple[str, ...], k: int) -> list[str]:
    """``k`` distinct items drawn by the probe seed; ``salt`` keeps the draws of different probes apart."""
    if not 1 <= k <= len(items):
        raise ValueError(f"need between 1 and {len(items)} items, got {k}")
    return random.Random(f"{salt}/{seed}").sample(list(items), k)


class OneSeatProbe(TextEnv):
    """A one-seat probe of ``decisions`` turns; subclasses say what each turn shows and what pays."""

    decisions = 1
    cloneable = True  # plain Python state; the cue generator is copied with it

    def __init__(self, name: str, description: str, labels: list[str]) -> None:
        self.name = name
        self.possible_agents = ["player_0"]
        self.teams = {"player_0": "team"}
        self.description = description
        self.labels = sorted(labels)  # shown in a fixed order that says nothing about which pays
        self.choices: list[str] = []
        self.rng = random.Random(0)

    def reset(self, seed: int | None = None) -> None:
        # Salted: a player seeded with the same number (the runner's scripted players are) draws independently.
        self.rng = random.Random(f"{self.name}/{seed}")
        self.choices = []
        self._reset_forfeit()
        self.deal()

    def deal(self) -> None:
        """Draw what this game shows (a cue); nothing by default."""

    def pending(self) -> list[str]:
        return [] if self._finished else ["player_0"]

    def observe(self, agent: str) -> Observation:
        return Observation(
            agent=agent,
            text=self.situation(),
            legal_actions=list(self.labels),
            action_ids=list(range(len(self.labels))),
        )

    def situation(self) -> str:
        raise NotImplementedError

    def payoff(self) -> float:
        raise NotImplementedError

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        self.choices.append(self.labels[actions["player_0"]])
        return {"player_0": self.payoff() if self._finished else 0.0}

    def _returns(self) -> dict[str, float]:
        return {"player_0": self.payoff() if self._finished else 0.0}

    @property
    def _finished(self) -> bool:
        return len(self.choices) >= self.decisions

    def action_vocabulary(self, agent: str) -> list[str] | None:
        return list(self.labels)


#: The two seats of the two-seat probes.
SEATS = ["player_0", "player_1"]


class SimultaneousProbe(TextEnv):
    """A one-step probe where both seats choose at once, each among its own words (``seat_words``); subclasses say
    what each seat sees and what the pair of choices pays (``_returns`` reads ``choices``)."""

    cloneable = True  # plain Python state

    def __init__(self, name: str, description: str, teams: dict[str, str], seat_words: dict[str, list[str]]) -> None:
        self.name = name
        self.possible_agents = list(SEATS)
        self.teams = teams
        self.description = description
        self.seat_words = seat_words
        self.choices: dict[str, str] = {}

    def reset(self, seed: int | None = None) -> None:
        self.choices = {}
        self._reset_forfeit()

    def pending(self) -> list[str]:
        return [] if self.choices else list(SEATS)

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        self.choices = {seat: self.seat_words[seat][a] for seat, a in actions.items()}
        return self._returns()

    @property
    def _finished(self) -> bool:
        return bool(self.choices)

    def action_vocabulary(self, agent: str) -> list[str] | None:
        return list(self.seat_words[agent])
