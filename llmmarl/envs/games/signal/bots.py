"""A truthful speaker for the signal game (``signal_v0``), offered as the scripted policy ``signal_truthful``.

It names the secret goal in its message and plays 'ready'. Paired with a learning listener it is a teacher: the
listener learns to pick the color it is told, which a listener trained only with a learning speaker has to
discover while the speaker's words still mean nothing (both start near chance, and each learns only as fast as
the other becomes reliable). The speaker reads the goal from its own observation text, as an LLM speaker would.
"""

from __future__ import annotations

import random
import re

from llmmarl.envs.base import Observation, TextEnv

_GOAL = re.compile(r"The secret goal is: (\w+)\.")


class SignalTruthful:
    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return obs.action_ids[0]  # the speaker's only move is 'ready'

    def message(self, env: TextEnv, obs: Observation, rng: random.Random) -> str | None:
        found = _GOAL.search(obs.text)
        if found is None:
            raise ValueError(f"signal_truthful plays the speaker of signal_v0; seat {obs.agent} sees no goal")
        return found.group(1)
