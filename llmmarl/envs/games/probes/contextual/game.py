"""The contextual probe: each game shows one of ``cues`` cue words (drawn by the reset seed); each cue has its own
paying word, a one-to-one mapping drawn by ``seed``."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.probes.common import CUES, WORDS, OneSeatProbe, as_probe, draw


class Contextual(OneSeatProbe):
    def __init__(self, cues: int = 3, seed: int = 0) -> None:
        if not 2 <= cues <= len(CUES):
            raise ValueError(f"cues must be 2 to {len(CUES)}, got {cues}")
        words = draw(seed, "contextual", WORDS, cues)
        self.cues = list(CUES[:cues])
        self.mapping = dict(zip(self.cues, words, strict=True))  # cue -> its paying word
        super().__init__(
            "probe_contextual",
            f"A one-step game. You are shown a sign, one of {', '.join(self.cues)}, and choose one of {cues} "
            "words. Each sign has its own scoring word (1 point); the other words score 0. The mapping is not "
            "shown: find it out by playing.",
            words,
        )
        self.cue = self.cues[0]

    def deal(self) -> None:
        self.cue = self.rng.choice(self.cues)

    def situation(self) -> str:
        return f"The sign shows: {self.cue}.\nChoose one word: {', '.join(self.labels)}."

    def payoff(self) -> float:
        return 1.0 if self.choices[0] == self.mapping[self.cue] else 0.0


class ContextualOptimal:
    """The word mapped to the cue shown."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        probe = as_probe(env, Contextual)
        return obs.action_id(probe.mapping[probe.cue])

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        probe = as_probe(env, Contextual)
        return [float(label == probe.mapping[probe.cue]) for label in obs.legal_actions]
