"""Hanabi (registered as PettingZoo's name ``hanabi_v5``; played on OpenSpiel's ``hanabi`` through shimmy).

Cooperative: every seat is in one team and shares the score. Free talk is off, since a message could simply name
a teammate's cards; hints are moves of the game. The text is OpenSpiel's native observation string, which shows
the other players' hands and hides the seat's own cards as ``XX``. The default is a small game (2 colors, ranks
1-3, 3 cards per hand, 2 players) that a small model can finish; any OpenSpiel hanabi parameter can be passed.
"""

from __future__ import annotations

import re
from typing import Any

from llmmarl.envs.base import ForecastSpec, MessageRules
from llmmarl.envs.openspiel import OpenSpielRenderer, OpenSpielTextEnv

COLOR_LETTERS = "RYGWB"  # OpenSpiel/HLE color order
_REVEAL = re.compile(r"Reveal player \+(\d+) (color|rank) (\w+)")


def describe_hanabi(players: int, colors: int, ranks: int, hand_size: int, life: int, info: int) -> str:
    letters = ", ".join(COLOR_LETTERS[:colors])
    return (
        f"Hanabi, a cooperative card game for {players} players who share one score. The deck has {colors} colors "
        f"({letters}) and ranks 1 to {ranks}: three 1s, two of each middle rank and one {ranks} per color. Each "
        f"player holds {hand_size} cards and sees everyone's cards except their own. Goal: build one firework per "
        f"color by playing its cards in order 1, 2, ... {ranks}. On your turn do one of: play a card (if it is the "
        f"next rank of its color it is added and scores 1 point, otherwise the team loses a life token), discard a "
        f"card (regains an info token; not possible when all {info} are available), or spend an info token to "
        f"hint a teammate: point out all their cards of one color or of one rank. After a play or discard you draw a "
        f"new card. The game ends when all fireworks are complete, when the {life} life tokens are gone (the score "
        f"then drops to 0), or one round after the deck runs out. Score: the number of cards played successfully. "
        f"Reading the state: 'Fireworks: R1' means R1 has been played; your own hand is listed first, your cards "
        f"hidden as XX; other hands follow after '-----'. After '||' comes what that card's holder knows about it "
        f"(known color and rank, X if unknown, then the colors and ranks still possible). Card positions count "
        f"from 0 at the top. 'Cur player' marks whose turn it is. Talking is not allowed: hints are moves."
    )


class HanabiRenderer(OpenSpielRenderer):
    """Native OpenSpiel text; labels are the native action strings, lower-cased and without parentheses."""

    def __init__(self, players: int, description: str) -> None:
        super().__init__(source="observation")
        self.players = players
        self.description = description

    def action_label(self, env: OpenSpielTextEnv, agent: str, action: int) -> str:
        # "(Play 0)", "(Reveal player +1 rank 2)"
        native = env.state.action_to_string(env.player(agent), action).strip("()")
        reveal = _REVEAL.fullmatch(native)
        if reveal:
            offset, kind, value = reveal.groups()
            who = "" if self.players == 2 else f"player +{offset} "  # with two players, +1 is the only teammate
            return f"hint {who}{kind} {value}"
        return native.replace("Play", "play card").replace("Discard", "discard card")


# The small default game; OpenSpiel's own names, so any other hanabi parameter passes through unchanged.
SMALL_GAME = {"players": 2, "colors": 2, "ranks": 3, "hand_size": 3, "max_life_tokens": 3, "max_information_tokens": 8}


def make_hanabi(**params: Any) -> OpenSpielTextEnv:
    """Hanabi on OpenSpiel: ``SMALL_GAME`` unless ``params`` (any OpenSpiel hanabi parameter) say otherwise."""
    config = {**SMALL_GAME, **params}
    players, colors, ranks = (int(config[k]) for k in ("players", "colors", "ranks"))
    text = describe_hanabi(
        players, colors, ranks, config["hand_size"], config["max_life_tokens"], config["max_information_tokens"]
    )
    env = OpenSpielTextEnv(
        "hanabi",
        name="hanabi_v5",
        renderer=HanabiRenderer(players, text),
        teams={f"player_{i}": "team" for i in range(players)},
        message_rules=MessageRules(mode="off"),  # free talk could name a teammate's cards
        **config,
    )
    env.forecast = ForecastSpec(target="payoff", scale=float(colors * ranks))  # the team's final score
    return env
