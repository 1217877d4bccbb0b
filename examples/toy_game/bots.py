"""A perfect Nim player: leave the opponent a multiple of 3 stones whenever it can."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv


def perfect_nim(env: TextEnv, obs: Observation, rng: random.Random) -> int:
    # Nim's state is public, so reading it from the env shows the seat nothing it may not see.
    stones = getattr(env, "stones", None)
    if stones is None:
        raise ValueError("the perfect_nim policy plays toy_nim only")
    winning = [take for take in obs.action_ids if (stones - take) % 3 == 0]
    return winning[0] if winning else rng.choice(obs.action_ids)  # a lost position: any move
