"""Kuhn poker (OpenSpiel ``kuhn_poker``): one private card, one betting round, told in words.

OpenSpiel's own text is cryptic (``"2pb"``: card 2, then pass, bet). The renderer reads only the seat's
information state (its card and the public betting) and names moves by what they mean at that point: with no
bet yet, action 0 is "check" and 1 is "bet"; facing a bet, 0 is "fold" and 1 is "call".
"""

from __future__ import annotations

from typing import Any

from llmmarl.envs.base import ForecastSpec
from llmmarl.envs.openspiel import OpenSpielRenderer, OpenSpielTextEnv

#: Card ids 0, 1, 2 (and 3 in the 3-player variant); the highest card wins.
CARD_NAMES = ("J", "Q", "K", "A")


class KuhnPokerRenderer(OpenSpielRenderer):
    description = (
        "Kuhn poker for two players, zero-sum. The deck has three cards, J < Q < K. Each player puts 1 chip in "
        "the pot (the ante) and gets one private card. Player 0 acts first and may check or bet 1 chip. After a "
        "check, player 1 may check (showdown) or bet 1 chip; after any bet, the other player must call (add 1 "
        "chip, showdown) or fold (give up the pot). At the showdown the higher card wins the pot. Payoffs: the "
        "winner wins +1 if nobody bet or someone folded, +2 if a bet was called; the loser loses the same."
    )

    def _view(self, env: OpenSpielTextEnv, player: int) -> tuple[int, str]:
        # This seat's information state is its card's digit followed by the public moves, e.g. "2pb".
        info = env.state.information_state_string(player)
        if not info or not info[0].isdigit() or set(info[1:]) - {"p", "b"}:
            raise ValueError(f"unexpected kuhn_poker information state {info!r}")
        return int(info[0]), info[1:]

    def observation(self, env: OpenSpielTextEnv, agent: str, raw: Any) -> str:
        player = env.player(agent)
        card, moves = self._view(env, player)
        n = env.game.num_players()
        names = ["you" if p == player else "your opponent" if n == 2 else f"player {p}" for p in range(n)]
        lines = [f"You are player {player}. Your card: {CARD_NAMES[card]}."]
        said, paid, bet = [], [1] * n, False
        for i, move in enumerate(moves):
            who = i % n  # seats act in turn from player 0
            if move == "b":
                said.append(f"{names[who]} {'called' if bet else 'bet'}")
                paid[who] += 1
                bet = True
            else:
                said.append(f"{names[who]} {'folded' if bet else 'checked'}")
        lines.append("Betting so far: " + (", ".join(said) + "." if said else "none, you act first."))
        others = ", ".join(f"{names[p]} {paid[p]}" for p in range(n) if p != player)
        lines.append(f"Pot: {sum(paid)} chips (you put in {paid[player]}, {others}).")
        lines.append("You face a bet: call or fold." if bet else "No bet yet: check or bet.")
        return "\n".join(lines)

    def action_label(self, env: OpenSpielTextEnv, agent: str, action: int) -> str:
        _, moves = self._view(env, env.player(agent))
        facing_bet = "b" in moves
        return ("fold", "call")[action] if facing_bet else ("check", "bet")[action]

    def vocabulary(self, env: OpenSpielTextEnv, agent: str) -> list[str] | None:
        return ["check", "bet", "fold", "call"]


class KuhnPokerEnv(OpenSpielTextEnv):
    """Kuhn poker whose agents forecast the opponent's card, checked against the dealt card."""

    forecast = ForecastSpec(target="opponent_card", labels=CARD_NAMES[:3])

    def forecast_truth(self, agent: str) -> str | None:
        # The simulator's true state (never shown to the seat): the chance moves that dealt each player's card.
        dealt = self.state.history()[: self.game.num_players()]
        if len(dealt) < 2:
            return None
        return CARD_NAMES[dealt[1 - self.player(agent)]]


def make_kuhn_poker() -> OpenSpielTextEnv:
    return KuhnPokerEnv("kuhn_poker", name="kuhn_poker", renderer=KuhnPokerRenderer())
