"""Moved to :mod:`llmmarl.envs.games.kuhn_poker.bots` (the Kuhn poker package); kept so old imports work."""

from llmmarl.envs.games.kuhn_poker.bots import DEFAULT_ALPHA, kuhn_nash, nash_bet_probability

__all__ = ["DEFAULT_ALPHA", "kuhn_nash", "nash_bet_probability"]
