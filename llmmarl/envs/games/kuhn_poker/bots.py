"""A Nash-equilibrium bot for Kuhn poker (``kuhn_poker``), offered as the scripted policy ``kuhn_nash``.

Kuhn (1950, "A simplified two-person poker", Contributions to the Theory of Games I) solved the game: the
first player's equilibria form a one-parameter family in α ∈ [0, 1/3], the second player's strategy is unique.
With cards J < Q < K and actions 0 = check/fold, 1 = bet/call, the probability of action 1 is:

==================  ======  =========  ======
situation            J       Q          K
==================  ======  =========  ======
P0 opens             α       0          3α
P0 after check-bet   0       α + 1/3    1
P1 after a check     1/3     0          1
P1 facing a bet      0       1/3        1
==================  ======  =========  ======

The first player's expected payoff is -1/18 for every α. Any equilibrium strategy is unexploitable: no
opponent wins more than the game value against it, while it still profits from opponents' mistakes (folding a
king, calling a bet with a jack).

The bot sees what an LLM in its seat sees: its own card and the public betting, read from the seat's OpenSpiel
information state (``"1pb"``: holds Q, then check, bet). It never reads the opponent's card.
"""

from __future__ import annotations

import random

from llmmarl.envs.base import Observation, TextEnv

#: α of the first player's family; 1/6 sits in the middle of [0, 1/3] and bluffs with J one time in six.
DEFAULT_ALPHA = 1.0 / 6.0


def nash_bet_probability(card: int, history: str, alpha: float = DEFAULT_ALPHA) -> float:
    """P(bet or call) for a seat holding ``card`` (0 = J, 1 = Q, 2 = K) after public moves ``history`` ('p'/'b')."""
    if not 0.0 <= alpha <= 1.0 / 3.0:
        raise ValueError(f"alpha must be in [0, 1/3] for an equilibrium, got {alpha}")
    table = {
        "": (alpha, 0.0, 3 * alpha),  # P0 opens
        "pb": (0.0, alpha + 1.0 / 3.0, 1.0),  # P0 checked, P1 bet
        "p": (1.0 / 3.0, 0.0, 1.0),  # P1 after a check
        "b": (0.0, 1.0 / 3.0, 1.0),  # P1 facing a bet
    }
    if history not in table or card not in (0, 1, 2):
        raise ValueError(f"not a two-player Kuhn decision: card {card}, history {history!r}")
    return table[history][card]


def _bet_probability(env: TextEnv, obs: Observation, alpha: float) -> float:
    state = getattr(env, "state", None)
    if env.name != "kuhn_poker" or state is None:
        raise ValueError("the kuhn_nash policy plays kuhn_poker only")
    player = env.possible_agents.index(obs.agent)
    info = state.information_state_string(player)  # this seat's view: its card digit + public moves
    return nash_bet_probability(int(info[0]), info[1:], alpha)


class KuhnNash:
    """The equilibrium as a scripted policy whose move probabilities are known (read exactly)."""

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = alpha

    def __call__(self, env: TextEnv, obs: Observation, rng: random.Random) -> int:
        return kuhn_nash(env, obs, rng, self.alpha)

    def probabilities(self, env: TextEnv, obs: Observation) -> list[float]:
        p = _bet_probability(env, obs, self.alpha)
        return [{0: 1.0 - p, 1: p}[a] for a in obs.action_ids]


def kuhn_nash(env: TextEnv, obs: Observation, rng: random.Random, alpha: float = DEFAULT_ALPHA) -> int:
    """Play the equilibrium from the seat's own information state; returns the action id (0 pass, 1 bet)."""
    action = 1 if rng.random() < _bet_probability(env, obs, alpha) else 0
    if action not in obs.action_ids:  # both moves are always legal in Kuhn poker; guard the contract anyway
        raise ValueError(f"kuhn_nash chose {action}, not legal in {obs.action_ids}")
    return action
