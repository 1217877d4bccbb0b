"""OpenSpiel's MCTS, offered as the scripted policy ``mcts`` for perfect-information ``openspiel:<game>`` games."""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv


class MCTS:
    """OpenSpiel's MCTSBot with random rollouts. It searches from the true game state, so it is offered only
    for perfect-information games, where that state is exactly what the seat sees."""

    def __init__(self, simulations: int = 200) -> None:
        self.simulations = simulations

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        import numpy as np
        import pyspiel
        from open_spiel.python.algorithms import mcts

        state = getattr(env, "state", None)
        if not isinstance(state, pyspiel.State):
            raise ValueError("the mcts policy plays OpenSpiel games (openspiel:<game>) only")
        game = state.get_game()
        if game.get_type().information != pyspiel.GameType.Information.PERFECT_INFORMATION:
            raise ValueError(f"mcts would see hidden information in {game}; use it on perfect-information games")
        evaluator = mcts.RandomRolloutEvaluator(n_rollouts=1, random_state=np.random.RandomState(rng.getrandbits(32)))
        bot = mcts.MCTSBot(
            game, 2.0, self.simulations, evaluator, random_state=np.random.RandomState(rng.getrandbits(32))
        )
        action = bot.step(state)
        return action if action in obs.action_ids else rng.choice(obs.action_ids)
