"""Matching pennies: both seats choose one of two words at the same time (the words drawn by ``seed``). The
matcher (``player_0``) scores +1 when the words are the same and -1 otherwise; the mismatcher (``player_1``) the
opposite. The only equilibrium is each word with probability 1/2, for both."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.probes.common import SEATS, WORDS, SimultaneousProbe, draw

ROLES = {"player_0": "matcher", "player_1": "mismatcher"}


class Pennies(SimultaneousProbe):
    def __init__(self, seed: int = 0) -> None:
        self.words = sorted(draw(seed, "pennies", WORDS, 2))
        super().__init__(
            "probe_pennies",
            f"Matching pennies: two players each choose {self.words[0]} or {self.words[1]} at the same time. The "
            "matcher scores +1 when both choose the same word and -1 otherwise; the mismatcher scores the opposite.",
            teams={s: s for s in SEATS},
            seat_words=dict.fromkeys(SEATS, self.words),
        )

    def observe(self, agent: str) -> Observation:
        text = f"You are the {ROLES[agent]}. Choose {self.words[0]} or {self.words[1]}."
        return Observation(agent=agent, text=text, legal_actions=list(self.words), action_ids=[0, 1])

    def _returns(self) -> dict[str, float]:
        if not self.choices:
            return dict.fromkeys(SEATS, 0.0)
        same = 1.0 if self.choices[SEATS[0]] == self.choices[SEATS[1]] else -1.0
        return {SEATS[0]: same, SEATS[1]: -same}


class PenniesOptimal:
    """The equilibrium: each word with probability 1/2."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return rng.choice(obs.action_ids)

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        return [1.0 / len(obs.action_ids)] * len(obs.action_ids)
