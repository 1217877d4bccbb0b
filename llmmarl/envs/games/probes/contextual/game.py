"""The contextual probe: each game shows one of ``cues`` cue words (drawn by the reset seed); each cue has its own
paying word, a one-to-one mapping drawn by ``seed``.

``words`` offers more words than cues (the extra ones never pay), and ``mapping`` names each cue's paying word
instead of drawing it: together they make the probe hard for a given model, every paying word one the model
rarely says at its cue (``llmmarl.studies.probes``' ``contextual_hard``)."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.probes.common import CUES, WORDS, OneSeatProbe, as_probe, draw


class Contextual(OneSeatProbe):
    def __init__(
        self, cues: int = 3, seed: int = 0, words: int | None = None, mapping: dict[str, str] | None = None
    ) -> None:
        if not 2 <= cues <= len(CUES):
            raise ValueError(f"cues must be 2 to {len(CUES)}, got {cues}")
        n = cues if words is None else words
        if not cues <= n <= len(WORDS):
            raise ValueError(f"words must be {cues} (the cues) to {len(WORDS)}, got {n}")
        self.cues = list(CUES[:cues])
        if mapping is None:
            labels = draw(seed, "contextual", WORDS, n)
            self.mapping = dict(zip(self.cues, labels, strict=False))  # cue -> its paying word
        else:
            if sorted(mapping) != sorted(self.cues) or not set(mapping.values()) <= set(WORDS):
                raise ValueError(
                    f"mapping must name a paying word for each cue {self.cues}, from {list(WORDS)}; got {mapping}"
                )
            if len(set(mapping.values())) != cues:
                raise ValueError(f"mapping must give each cue its own word, got {mapping}")
            others = [w for w in draw(seed, "contextual", WORDS, len(WORDS)) if w not in mapping.values()]
            labels = [*mapping.values(), *others[: n - cues]]
            self.mapping = dict(mapping)
        super().__init__(
            "probe_contextual",
            f"A one-step game. You are shown a sign, one of {', '.join(self.cues)}, and choose one of {n} "
            "words. Each sign has its own scoring word (1 point); the other words score 0. The mapping is not "
            "shown: find it out by playing.",
            labels,
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
