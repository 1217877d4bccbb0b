"""The speaker-listener probe: a goal among ``goals`` words is drawn each game; the speaker sees it, its only move
is ``ready``, and it may send one symbol (a closed vocabulary of meaningless syllables); the listener then picks a
word. Both score 1 when the pick is the goal. Without a message the listener is at chance, 1 / ``goals``.

The symbols mean nothing until a convention forms, and which symbols are on offer is drawn by ``seed``. The optimal
bot is the speaker of the convention "the i-th symbol names the i-th goal word"; the optimal listener follows it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from llmmarl.envs.base import MessageRules, Observation, TextEnv
from llmmarl.envs.games.probes.common import SYMBOLS, WORDS, as_probe, draw

SPEAKER, LISTENER = "speaker_0", "listener_0"


class SpeakerListener(TextEnv):
    cloneable = True  # plain Python state (messages are the runner's, not the game's)

    def __init__(self, goals: int = 2, seed: int = 0) -> None:
        self.name = "probe_speaker_listener"
        self.possible_agents = [SPEAKER, LISTENER]
        self.teams = {SPEAKER: "team", LISTENER: "team"}
        self.goals = sorted(draw(seed, "speaker", WORDS, goals))
        self.symbols = draw(seed, "speaker-symbols", SYMBOLS, goals)
        self.message_rules = MessageRules(mode="broadcast", max_tokens=4, vocabulary=tuple(self.symbols))
        self.description = (
            f"A two-player team game. Each game a goal word is drawn from {', '.join(self.goals)}. Only the "
            f"speaker sees it; the speaker's only move is 'ready', but it may first send the listener one symbol, "
            f"one of {', '.join(self.symbols)}. The listener then picks one word. Both score 1 when the pick is the "
            "goal, else 0."
        )
        self.goal = self.goals[0]
        self.pick: str | None = None
        self.spoke = False

    def reset(self, seed: int | None = None) -> None:
        self.goal = random.Random(f"{self.name}/{seed}").choice(self.goals)  # salted: see OneSeatProbe.reset
        self.pick, self.spoke = None, False
        self._reset_forfeit()

    def pending(self) -> list[str]:
        if not self.spoke:
            return [SPEAKER]
        return [] if self.pick is not None else [LISTENER]

    def observe(self, agent: str) -> Observation:
        if agent == SPEAKER:
            text = f"You are the speaker. The goal is: {self.goal}. Send the listener a symbol, then choose ready."
            return Observation(agent=agent, text=text, legal_actions=["ready"], action_ids=[0])
        text = f"You are the listener. Pick the goal, one of {', '.join(self.goals)}, using the speaker's symbol."
        return Observation(
            agent=agent, text=text, legal_actions=list(self.goals), action_ids=list(range(len(self.goals)))
        )

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        if SPEAKER in actions:
            self.spoke = True
            return {SPEAKER: 0.0, LISTENER: 0.0}
        self.pick = self.goals[actions[LISTENER]]
        return self._returns()

    def _returns(self) -> dict[str, float]:
        won = float(self.pick is not None and self.pick == self.goal)
        return {SPEAKER: won, LISTENER: won}

    @property
    def _finished(self) -> bool:
        return self.pick is not None

    def action_vocabulary(self, agent: str) -> list[str] | None:
        return ["ready"] if agent == SPEAKER else list(self.goals)


class SpeakerOptimal:
    """The speaker of the convention "the i-th symbol names the i-th goal word" (a talking bot)."""

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return obs.action_ids[0]

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        return [1.0]

    def message(self, env: TextEnv, obs: Observation, rng: random.Random) -> str | None:
        probe = as_probe(env, SpeakerListener)
        return probe.symbols[probe.goals.index(probe.goal)]
