"""The delayed-credit probe: two steps, each a choice among the same ``arms`` words. Only the first choice
matters (the word drawn by ``seed`` pays 1), and nothing is paid until the second step is played."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.probes.common import WORDS, OneSeatProbe, as_probe, draw


class Delayed(OneSeatProbe):
    decisions = 2

    def __init__(self, arms: int = 3, seed: int = 0) -> None:
        words = draw(seed, "delayed", WORDS, arms)
        super().__init__(
            "probe_delayed",
            f"A two-step game. At each step you choose one of {arms} words. The score (1 or 0) is given at the end, "
            "after step 2; which words score is not shown: find out by playing.",
            words,
        )
        self.paying = words[0]

    def situation(self) -> str:
        step = len(self.choices) + 1
        lines = [f"Step {step} of 2."]
        if self.choices:
            lines.append(f"At step 1 you chose {self.choices[0]}.")
        lines.append(f"Choose one word: {', '.join(self.labels)}.")
        return "\n".join(lines)

    def payoff(self) -> float:
        return 1.0 if self.choices[0] == self.paying else 0.0


class DelayedOptimal:
    """The paying word at step 1; at step 2 anything does (it plays the same word)."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return obs.action_id(as_probe(env, Delayed).paying)

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        paying = as_probe(env, Delayed).paying
        return [float(label == paying) for label in obs.legal_actions]
