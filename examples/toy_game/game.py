"""Nim with one pile as a text game. Players take 1 or 2 stones in turn; whoever takes the last one wins.

A game is a :class:`~llmmarl.envs.base.TextEnv` (text observations, labelled legal actions, returns);
``llmmarl.envs.check_text_env`` checks it like PettingZoo's API test.
"""

from __future__ import annotations

from collections.abc import Mapping

from llmmarl.envs.base import Observation, TextEnv


class Nim(TextEnv):
    def __init__(self, stones: int = 5) -> None:
        self.name = "toy_nim"
        self.possible_agents = ["player_0", "player_1"]
        self.teams = {a: a for a in self.possible_agents}  # competitive: every seat its own team
        self.description = "Nim: one pile of stones. Take 1 or 2 stones in turn; whoever takes the last stone wins."
        self.start = stones

    def reset(self, seed: int | None = None) -> None:
        self._reset_forfeit()
        self.stones, self.turn = self.start, 0
        self.winner: str | None = None

    def pending(self) -> list[str]:
        return [] if self.done else [self.possible_agents[self.turn]]

    def observe(self, agent: str) -> Observation:
        takes = [n for n in (1, 2) if n <= self.stones]
        return Observation(
            agent=agent, text=f"{self.stones} stones left.", legal_actions=[str(n) for n in takes], action_ids=takes
        )

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        ((agent, take),) = actions.items()
        self.stones -= take
        if self.stones == 0:
            self.winner = agent
            return {a: 1.0 if a == agent else -1.0 for a in self.possible_agents}
        self.turn = 1 - self.turn
        return {a: 0.0 for a in self.possible_agents}

    def _returns(self) -> dict[str, float]:
        if self.winner is None:
            return {a: 0.0 for a in self.possible_agents}
        return {a: 1.0 if a == self.winner else -1.0 for a in self.possible_agents}

    @property
    def _finished(self) -> bool:
        return self.winner is not None
