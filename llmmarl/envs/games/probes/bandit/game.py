"""The bandit probe: one decision among ``arms`` neutral words; the word drawn by ``seed`` pays 1."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.probes.common import WORDS, OneSeatProbe, as_probe, draw


class Bandit(OneSeatProbe):
    def __init__(self, arms: int = 3, seed: int = 0) -> None:
        words = draw(seed, "bandit", WORDS, arms)
        super().__init__(
            "probe_bandit",
            f"A one-step game. You choose one of {arms} words; one of them scores 1 point, the others 0. "
            "Which word scores is not shown: find out by playing.",
            words,
        )
        self.paying = words[0]

    def situation(self) -> str:
        return f"Choose one word: {', '.join(self.labels)}."

    def payoff(self) -> float:
        return 1.0 if self.choices[0] == self.paying else 0.0

    def optimal(self) -> dict[str, float]:
        """The optimal policy: every label's probability."""
        return {w: float(w == self.paying) for w in self.labels}


class BanditOptimal:
    """Always the paying word (it reads the game: the known answer, not a player)."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return obs.action_id(as_probe(env, Bandit).paying)

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        paying = as_probe(env, Bandit).paying
        return [float(label == paying) for label in obs.legal_actions]
