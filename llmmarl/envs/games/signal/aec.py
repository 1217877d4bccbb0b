"""Signal (``signal_v0``): a cooperative game that only communication can win.

Each round a secret goal, one of ``num_items`` colors, is drawn. The speaker sees it but can only say "ready";
the listener does not see it and must pick one color. Both get +1 if the pick is the goal, 0 otherwise. The
listener's observation holds nothing about the current goal, so without messages it scores at chance
(``rounds / num_items``); the runner delivers the speaker's message into the listener's prompt. After each round
both see the goal and the pick, so conventions can form over several rounds.

:class:`SignalEnv` is a plain PettingZoo ``AECEnv`` (passes ``pettingzoo.test.api_test``);
:func:`llmmarl.envs.games.signal.game.make_signal` wraps it as a text environment.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

ITEM_NAMES = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "brown")
SPEAKER, LISTENER = "speaker_0", "listener_0"  # PettingZoo naming: <role>_<number>


class SignalEnv(AECEnv):
    """The speaker-listener game as an AEC env. Speaker moves: 0 = ready. Listener moves: the item index.

    Observation of each agent: ``{"observation": int8 vector, "action_mask": int8 vector}``. The vector is four
    one-hot blocks: ``goal (K) | round (R) | last goal (K) | last pick (K)``, K = ``num_items``, R = ``rounds``.
    The goal block is all zeros for the listener; the last-round blocks are all zeros in the first round.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "ansi"],
        "name": "signal_v0",
        "is_parallelizable": False,
    }

    def __init__(self, num_items: int = 4, rounds: int = 1, render_mode: str | None = None) -> None:
        super().__init__()
        if not 2 <= num_items <= len(ITEM_NAMES):
            raise ValueError(f"num_items must be between 2 and {len(ITEM_NAMES)}, got {num_items}")
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode}")
        self.num_items, self.rounds, self.render_mode = num_items, rounds, render_mode
        self.items = ITEM_NAMES[:num_items]
        self.possible_agents = [SPEAKER, LISTENER]
        self.action_spaces = {SPEAKER: spaces.Discrete(1), LISTENER: spaces.Discrete(num_items)}
        size = 3 * num_items + rounds
        self.observation_spaces = {
            a: spaces.Dict(
                {
                    "observation": spaces.Box(0, 1, (size,), dtype=np.int8),
                    "action_mask": spaces.Box(0, 1, (self.action_spaces[a].n,), dtype=np.int8),
                }
            )
            for a in self.possible_agents
        }
        self.np_random, _ = seeding.np_random(None)

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.agents = self.possible_agents[:]
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        self.agent_selection = SPEAKER
        self._round, self._score = 0, 0
        self._last: tuple[int, int] | None = None  # (goal, pick) of the previous round
        self._goal = int(self.np_random.integers(self.num_items))

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        k = self.num_items
        vec = np.zeros(3 * k + self.rounds, dtype=np.int8)
        if agent == SPEAKER:
            vec[self._goal] = 1  # the only place the current goal appears
        vec[k + min(self._round, self.rounds - 1)] = 1
        if self._last is not None:
            goal, pick = self._last
            vec[k + self.rounds + goal] = 1
            vec[2 * k + self.rounds + pick] = 1
        mask = np.ones(self.action_spaces[agent].n, dtype=np.int8)
        return {"observation": vec, "action_mask": mask}

    def step(self, action: int | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if action is None or not self.action_spaces[agent].contains(int(action)):
            raise ValueError(f"illegal action {action!r} for {agent}; legal: 0..{self.action_spaces[agent].n - 1}")
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if agent == SPEAKER:
            self.agent_selection = LISTENER
        else:
            hit = int(action) == self._goal
            self._score += hit
            self.rewards = dict.fromkeys(self.agents, 1.0 if hit else 0.0)  # one team reward
            self._last = (self._goal, int(action))
            self._round += 1
            if self._round == self.rounds:
                self.terminations = dict.fromkeys(self.agents, True)
            else:
                self._goal = int(self.np_random.integers(self.num_items))
            self.agent_selection = SPEAKER
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        lines = [f"Round {min(self._round + 1, self.rounds)}/{self.rounds}, score {self._score}."]
        if self._round < self.rounds:
            lines.append(f"Goal (seen by the speaker only): {self.items[self._goal]}. To act: {self.agent_selection}.")
        if self._last is not None:
            goal, pick = self._last
            lines.append(f"Last round: goal {self.items[goal]}, listener picked {self.items[pick]}.")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass


raw_env = SignalEnv


def env(**kwargs: Any) -> AECEnv:
    """The PettingZoo-style wrapped env (bounds and call-order checks)."""
    wrapped: AECEnv = wrappers.AssertOutOfBoundsWrapper(SignalEnv(**kwargs))
    return wrappers.OrderEnforcingWrapper(wrapped)
