"""Bargaining (OpenSpiel ``bargaining``, the "Deal or no deal" game of Lewis et al. 2017): split a pool of items.

A chance node draws a pool of books, hats and basketballs and each player's private value per item. Players
take turns making offers (an offer is the items its maker takes; the other player gets the rest) until one
accepts the last offer or the turns run out. Every possible offer is a legal action, so moves never need parsing
beyond their label. General-sum: each player scores the value of the items it ends up with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyspiel

from llmmarl.envs.base import ForecastSpec
from llmmarl.envs.openspiel import OpenSpielRenderer, OpenSpielTextEnv

#: OpenSpiel's bargaining has exactly these three item types, in this order (its ``kNumItemTypes`` is 3).
ITEMS = ("book", "hat", "basketball")


def items_text(quantities: Sequence[int]) -> str:
    """``[2, 1, 0]`` -> ``"2 books, 1 hat, 0 basketballs"``."""
    return ", ".join(f"{q} {name}{'' if q == 1 else 's'}" for q, name in zip(quantities, ITEMS, strict=True))


class BargainingRenderer(OpenSpielRenderer):
    def __init__(self, max_turns: int = 10, discount: float = 1.0, prob_end: float = 0.0) -> None:
        super().__init__()
        rules = [
            "Bargaining for two players (general-sum). A pool of books, hats and basketballs is to be split. Each "
            "player has private values per item (the other player's values are secret). Players take turns, "
            "player 0 first. On your turn, offer a split or accept the other player's last offer. An offer "
            "'take 2 books, 0 hats, 1 basketball' means you get those items and the other player gets the rest.",
            f"If an offer is accepted, each player scores the total value of its items; "
            f"once {max_turns} offers have been made without one being accepted, both score 0.",
        ]
        if discount < 1.0:
            rules.append(f"Scores are multiplied by {discount:g} for every turn before the agreement.")
        if prob_end > 0.0:
            rules.append(f"After each turn the game may end without a deal with probability {prob_end:g}.")
        self.description = " ".join(rules)

    def observation(self, env: OpenSpielTextEnv, agent: str, raw: Any) -> str:
        state, player = env.state, env.player(agent)
        pool, values = list(state.instance().pool), list(state.instance().values[player])  # only this seat's values
        worth = sum(q * v for q, v in zip(pool, values, strict=True))
        lines = [
            f"You are player {player}.",
            f"Pool: {items_text(pool)}.",
            "Your values per item: "
            + ", ".join(f"{name} {v}" for name, v in zip(ITEMS, values, strict=True))
            + f" (the whole pool is worth {worth} to you).",
        ]
        offers = [list(o.quantities) for o in state.offers()]
        if offers:
            lines.append("Offers so far (each offer is what its maker takes):")
        for turn, taken in enumerate(offers):
            yours = taken if turn % 2 == player else [p - q for p, q in zip(pool, taken, strict=True)]
            maker = "you" if turn % 2 == player else "other player"
            value = sum(q * v for q, v in zip(yours, values, strict=True))
            lines.append(
                f"  {turn + 1}. {maker}: take {items_text(taken)} -> you get {items_text(yours)} (worth {value} to you)"
            )
        max_turns = env.game.max_turns()
        lines.append(f"Offers made: {len(offers)} of at most {max_turns}. No accepted offer means 0 for both.")
        lines.append("Make an offer, or accept the other player's last offer." if offers else "Make the first offer.")
        return "\n".join(lines)

    def action_label(self, env: OpenSpielTextEnv, agent: str, action: int) -> str:
        if action == env.state.agree_action():
            return "accept"
        return "take " + items_text(env.game.all_offers()[action].quantities)


def make_bargaining(max_turns: int = 10, discount: float = 1.0, prob_end: float = 0.0) -> OpenSpielTextEnv:
    """Bargaining with OpenSpiel's built-in instances (``max_turns`` offers at most; optional discount)."""
    renderer = BargainingRenderer(max_turns, discount, prob_end)
    env = OpenSpielTextEnv(
        "bargaining", name="bargaining", renderer=renderer, max_turns=max_turns, discount=discount, prob_end=prob_end
    )
    # The value of the deal reached; OpenSpiel bounds it (10 with its built-in instances).
    env.forecast = ForecastSpec(target="payoff", scale=pyspiel.load_game("bargaining").max_utility())
    return env
