"""The coordination probe: seats ``player_0`` and ``player_1`` choose at the same time, each among ``arms`` words of
its own. The words are paired one to one (drawn by ``seed``); both score 1 when their choices are a pair, else 0.

Each seat has its own words, so two copies of one base model do not match by sharing a liking for one word: the
pairing must be learned, by two adapters, from the shared reward. Any one pair played every time is optimal.
"""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.probes.common import SEATS, WORDS, SimultaneousProbe, as_probe, draw


class Coordination(SimultaneousProbe):
    def __init__(self, arms: int = 2, seed: int = 0) -> None:
        words = draw(seed, "coordination", WORDS, 2 * arms)
        super().__init__(
            "probe_coordination",
            f"A one-step team game for two players who choose at the same time, each one of {arms} words of its "
            "own. Each word of player_0 has one partner word of player_1; both players score 1 when they choose "
            "partners, else 0. The pairing is not shown: find it out by playing.",
            teams=dict.fromkeys(SEATS, "team"),
            seat_words={SEATS[0]: sorted(words[:arms]), SEATS[1]: sorted(words[arms:])},
        )
        self.partner = dict(zip(words[:arms], words[arms:], strict=True))  # player_0's word -> player_1's

    def observe(self, agent: str) -> Observation:
        words = self.seat_words[agent]
        return Observation(
            agent=agent,
            text=f"You are {agent}. Choose one of your words: {', '.join(words)}.",
            legal_actions=list(words),
            action_ids=list(range(len(words))),
        )

    def matched(self) -> bool:
        return self.partner[self.choices[SEATS[0]]] == self.choices[SEATS[1]]

    def _returns(self) -> dict[str, float]:
        won = float(bool(self.choices) and self.matched())
        return dict.fromkeys(SEATS, won)


class CoordinationOptimal:
    """Both seats play the first pair (player_0's first word and its partner)."""

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        probe = as_probe(env, Coordination)
        first = probe.seat_words[SEATS[0]][0]
        mine = first if obs.agent == SEATS[0] else probe.partner[first]
        return [float(label == mine) for label in obs.legal_actions]

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return obs.action_ids[self.probabilities(env, obs).index(1.0)]
