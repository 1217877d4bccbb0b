"""Leduc Hold'em (PettingZoo ``leduc_holdem_v4``, RLCard's game) shown from one seat's own observation vector."""

from __future__ import annotations

from typing import Any

import numpy as np

# The implementation module, not the ``leduc_holdem_v4`` shim: in PettingZoo 1.27 the shim warns
# DeprecationWarning on import. Same env (v4 of this installed version).
from pettingzoo.classic.rlcard_envs import leduc_holdem

from llmmarl.envs.base import ForecastSpec
from llmmarl.envs.pettingzoo import AECTextEnv, PettingZooTextEnv, Renderer

#: Action labels in action-id order (RLCard's LeducholdemEnv.actions).
ACTIONS = ("call", "raise", "fold", "check")
#: Card ranks in one-hot order (rlcard/games/leducholdem/card2index.json: J=0, Q=1, K=2; suits are not encoded).
RANKS = ("Jack", "Queen", "King")
#: Chips a raise adds on top of matching, per betting round (RLCard: raise_amount = big blind 2, doubled in round 2).
RAISE_BY_ROUND = (2, 4)

# Layout of RLCard's 36-dim Leduc observation (LeducholdemEnv._extract_state), always from the observing seat:
_HAND = slice(0, 3)  # own private card, one-hot rank
_PUBLIC = slice(3, 6)  # public card, one-hot rank; all zero until it is dealt after round 1
_MY_CHIPS = slice(6, 21)  # chips this seat has put in the pot, one-hot 0..14
_OPP_CHIPS = slice(21, 36)  # chips the opponent has put in, one-hot 0..14


def _one_hot(vec: np.ndarray, part: slice) -> int | None:
    hot = np.flatnonzero(vec[part])
    if len(hot) > 1:
        raise ValueError(f"expected a one-hot segment {part}, got {vec[part]}")
    return int(hot[0]) if len(hot) else None


def _chips(n: int) -> str:
    return f"{n} chip" if n == 1 else f"{n} chips"


class LeducHoldemRenderer(Renderer):
    description = (
        "Leduc Hold'em poker for 2 players with a six-card deck (two Jacks, two Queens, two Kings): each player "
        "gets one private card and puts a blind of 1 or 2 chips in the pot, then there are two betting rounds, "
        "with one public card revealed before the second. On your turn you may check (bet nothing, only when "
        "chips are equal), call (match the opponent's chips), raise (match, then add 2 chips in round 1 or 4 in "
        "round 2; at most 2 raises per round) or fold (give up the pot). If nobody folds, a card that matches "
        "the public card wins, otherwise the higher card wins (King > Queen > Jack) and equal cards split the "
        "pot. Your reward is the chips you win or lose, divided by 2."
    )

    def observation(self, env: PettingZooTextEnv, agent: str, raw: Any) -> str:
        # Only this seat's own observation (vector and legal-move mask) is read: neither holds the opponent's card.
        vec = np.asarray(raw["observation"])  # (36,), layout above
        hand, public = _one_hot(vec, _HAND), _one_hot(vec, _PUBLIC)
        mine, theirs = _one_hot(vec, _MY_CHIPS), _one_hot(vec, _OPP_CHIPS)
        if hand is None or mine is None or theirs is None:
            raise ValueError(f"not a Leduc Hold'em observation of a live hand: {vec}")
        betting_round = 1 if public is None else 2
        lines = [f"Betting round {betting_round} of 2.", f"Your private card: {RANKS[hand]}."]
        if public is None:
            lines.append("Public card: not revealed yet.")
        else:
            pair = " It matches your card: you have a pair." if public == hand else ""
            lines.append(f"Public card: {RANKS[public]}.{pair}")
        lines.append(f"Chips in the pot: you {mine}, opponent {theirs} (total {mine + theirs}).")
        if theirs > mine:
            lines.append(f"To call you must add {_chips(theirs - mine)}.")
        if raw["action_mask"][ACTIONS.index("raise")]:
            lines.append(f"A raise now adds {_chips(RAISE_BY_ROUND[betting_round - 1])} on top of matching.")
        return "\n".join(lines)

    def action_label(self, env: PettingZooTextEnv, agent: str, action: int) -> str:
        return ACTIONS[action]


def make_leduc_holdem() -> AECTextEnv:
    env = AECTextEnv("leduc_holdem_v4", leduc_holdem.env, LeducHoldemRenderer())
    # A chip game: forecast the expected payoff, in big blinds as rlcard pays (at most 13 chips = 6.5 blinds).
    env.forecast = ForecastSpec(target="payoff", scale=6.5)
    return env
